"""Cgroup layout detection and the kubelet cgroup resolver.

The BPF side sees a task's cgroup as ``bpf_get_current_cgroup_id()``, which is
the inode number of its cgroup2 directory. This module finds the cgroup2 mount
(pure v2 at /sys/fs/cgroup, or hybrid with cgroup2 at /sys/fs/cgroup/unified
and the controllers on v1), locates each pod's and container's directory for
both kubelet cgroup drivers, and turns them into a ``PodIndex``.

Kubelet layouts handled (``<uid_>`` is the pod uid with ``-`` replaced by ``_``):

  systemd   kubepods.slice/kubepods-pod<uid_>.slice/<prefix><id>.scope                      (Guaranteed)
            kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/<prefix><id>.scope
  cgroupfs  kubepods/pod<uid>/<id>                                                           (Guaranteed)
            kubepods/<qos>/pod<uid>/<id>

with runtime prefixes ``cri-containerd-``, ``crio-`` and ``docker-``. The QoS
directory is searched, not taken from the pod status, which may lack it.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import struct
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kpod_agent.pods import CgroupEntry, PodIndex, PodInfo

log = logging.getLogger(__name__)

# Controllers a v1 hierarchy can carry; other mount options (rw, relatime,
# name=systemd, ...) are not controllers.
V1_CONTROLLERS = frozenset({
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls",
    "net_prio", "blkio", "perf_event", "hugetlb", "pids", "rdma", "misc",
})

# containerStatuses[].containerID scheme -> systemd scope prefix.
RUNTIME_PREFIXES: dict[str, str] = {
    "containerd": "cri-containerd-",
    "cri-o": "crio-",
    "docker": "docker-",
}
# Every prefix seen in directory names, for mapping a directory back to an id.
_KNOWN_PREFIXES = ("cri-containerd-", "crio-", "docker-", "containerd-")

QOS_CLASSES = ("guaranteed", "burstable", "besteffort")
DEFAULT_KUBEPODS_ROOTS = ("kubepods.slice", "kubepods")

# Bounds on a full walk of the cgroup2 tree (mode none): a host with more
# cgroups than this is misconfigured for per-cgroup metrics anyway.
MAX_HOST_CGROUPS = 20000
# lookup_path() walks the tree again at most this often (seconds).
REWALK_INTERVAL = 1.0

_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")


class CgroupError(RuntimeError):
    """The cgroup filesystem is missing or not usable."""


@dataclass(frozen=True)
class CgroupLayout:
    unified: Path
    """The cgroup2 mount, where cgroup ids live: /sys/fs/cgroup or /sys/fs/cgroup/unified."""
    v1: Mapping[str, Path] = field(default_factory=dict)
    """Controller -> v1 mount on hybrid hosts; empty on pure v2."""

    @property
    def hybrid(self) -> bool:
        return bool(self.v1)

    def controller_dir(self, relpath: str, controller: str) -> Path:
        """Directory that holds `controller`'s files for cgroup `relpath`.

        The v1 mount of that controller on hybrid hosts (kubelet mirrors the
        same relative path in every hierarchy), else the unified directory."""
        base = self.v1.get(controller, self.unified)
        return base / relpath if relpath else base

    def unified_dir(self, relpath: str) -> Path:
        return self.unified / relpath if relpath else self.unified


def _unescape_mount(path: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes.
    return _MOUNT_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), path)


def _parse_mounts(text: str) -> tuple[list[Path], dict[str, list[Path]]]:
    """(cgroup2 mount points, v1 controller -> mount points) from /proc/mounts text."""
    unified: list[Path] = []
    v1: dict[str, list[Path]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mountpoint, fstype, options = _unescape_mount(fields[1]), fields[2], fields[3]
        if fstype == "cgroup2":
            unified.append(Path(mountpoint))
        elif fstype == "cgroup":
            for option in options.split(","):
                if option in V1_CONTROLLERS:
                    v1.setdefault(option, []).append(Path(mountpoint))
    return unified, v1


def _pick_unified(mounts: list[Path]) -> Path:
    # A pod may see several cgroup2 mounts (its own and the host's); the host
    # tree is the one mounted at .../sys/fs/cgroup or .../sys/fs/cgroup/unified.
    for suffix in (("sys", "fs", "cgroup"), ("sys", "fs", "cgroup", "unified")):
        for mount in mounts:
            if mount.parts[-len(suffix):] == suffix:
                return mount
    return mounts[0]


def detect_layout(cgroup_root: str = "auto", proc_mounts: str = "/proc/mounts") -> CgroupLayout:
    """Find the cgroup2 mount and, on hybrid hosts, the v1 controller mounts.

    ``auto`` reads `proc_mounts`. An explicit path is taken as the cgroup2
    mount; when it is named ``unified`` its parent's other directories are
    the v1 hierarchies (``cpu,cpuacct`` directories give both controllers).
    """
    if cgroup_root != "auto":
        return _explicit_layout(Path(cgroup_root))
    try:
        text = Path(proc_mounts).read_text()
    except OSError as exc:
        raise CgroupError(f"cannot read {proc_mounts}: {exc}") from exc
    unified_mounts, v1_mounts = _parse_mounts(text)
    if not unified_mounts:
        raise CgroupError(
            f"no cgroup2 filesystem in {proc_mounts}: the agent needs cgroup v2 "
            "(pure or hybrid with cgroup2 at /sys/fs/cgroup/unified)")
    unified = _pick_unified(unified_mounts)
    v1: dict[str, Path] = {}
    for controller, paths in v1_mounts.items():
        # Prefer the hierarchy next to the chosen cgroup2 mount.
        siblings = [p for p in paths if p.parent == unified.parent]
        v1[controller] = (siblings or paths)[0]
    return CgroupLayout(unified=unified, v1=v1)


def _explicit_layout(root: Path) -> CgroupLayout:
    if not root.is_dir():
        raise CgroupError(f"cgroupRoot {root} is not a directory")
    # A hybrid host's /sys/fs/cgroup is a tmpfs of hierarchies: the ids are
    # in its unified/ child, so accept the parent and step down.
    if not (root / "cgroup.controllers").exists() and (root / "unified" / "cgroup.controllers").exists():
        root = root / "unified"
    v1: dict[str, Path] = {}
    if root.name == "unified":
        for entry in sorted(root.parent.iterdir()):
            if entry.name == "unified" or not entry.is_dir():
                continue
            for controller in entry.name.split(","):
                if controller in V1_CONTROLLERS:
                    v1.setdefault(controller, entry)
    return CgroupLayout(unified=root, v1=v1)


def cgroup_id(path: Path) -> int:
    """The id BPF reports for a cgroup: the inode number of its cgroup2 directory."""
    return os.stat(path).st_ino


def container_id_from_dirname(name: str) -> str:
    """The container id a runtime's cgroup directory name carries.

    ``cri-containerd-<id>.scope``, ``crio-<id>.scope``, ``docker-<id>.scope``
    (systemd driver) or a bare ``<id>`` / ``crio-<id>`` (cgroupfs driver)."""
    if name.endswith(".scope"):
        name = name[: -len(".scope")]
    for prefix in _KNOWN_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _systemd_stem(root: str) -> str | None:
    """``kubepods.slice`` -> ``kubepods``; ``kubelet.slice/kubelet-kubepods.slice`` -> ``kubelet-kubepods``."""
    last = root.rstrip("/").rsplit("/", 1)[-1]
    return last[: -len(".slice")] if last.endswith(".slice") else None


class CgroupResolver:
    """Maps pods and containers to cgroup2 directories and their ids."""

    def __init__(
        self,
        layout: CgroupLayout,
        kubepods_roots: Iterable[str] = DEFAULT_KUBEPODS_ROOTS,
        max_host_cgroups: int = MAX_HOST_CGROUPS,
    ) -> None:
        """`kubepods_roots`: kubelet's top cgroups relative to the cgroup2 mount.
        A root ending in ``.slice`` uses the systemd driver's names, any other
        the cgroupfs driver's (kubelet's --cgroup-root can move them)."""
        self.layout = layout
        self.kubepods_roots = tuple(kubepods_roots)
        self.max_host_cgroups = max_host_cgroups
        self._host_paths: dict[int, str] = {}
        self._last_walk = float("-inf")
        # File handles only mean cgroup ids on a real cgroup2 mount.
        self._handles_ok = (layout.unified / "cgroup.controllers").exists()

    # -- pods and containers -------------------------------------------------

    def pod_dir_candidates(self, pod_uid: str, qos_class: str | None = None) -> list[str]:
        """Where kubelet may put the pod's cgroup, the hinted QoS class first."""
        qos_order = list(QOS_CLASSES)
        hint = (qos_class or "").lower()
        if hint in qos_order:
            qos_order.remove(hint)
            qos_order.insert(0, hint)
        underscored = pod_uid.replace("-", "_")
        out: list[str] = []
        for root in self.kubepods_roots:
            stem = _systemd_stem(root)
            for qos in qos_order:
                if stem is not None:
                    if qos == "guaranteed":
                        out.append(f"{root}/{stem}-pod{underscored}.slice")
                    else:
                        out.append(f"{root}/{stem}-{qos}.slice/{stem}-{qos}-pod{underscored}.slice")
                elif qos == "guaranteed":
                    out.append(f"{root}/pod{pod_uid}")
                else:
                    out.append(f"{root}/{qos}/pod{pod_uid}")
        return out

    def pod_dir(self, pod_uid: str, qos_class: str | None = None) -> str | None:
        """Relative path of the pod's cgroup, searched over drivers and QoS classes."""
        if not pod_uid or "/" in pod_uid:
            return None
        for rel in self.pod_dir_candidates(pod_uid, qos_class):
            if self.layout.unified_dir(rel).is_dir():
                return rel
        return None

    def container_dir(self, pod_relpath: str, runtime: str, container_id: str) -> str | None:
        """Relative path of a container's cgroup inside its pod's directory."""
        if not container_id or "/" in container_id:
            return None
        prefix = RUNTIME_PREFIXES.get(runtime, f"{runtime}-")
        for name in (f"{prefix}{container_id}.scope", container_id, f"{prefix}{container_id}"):
            if self.layout.unified_dir(f"{pod_relpath}/{name}").is_dir():
                return f"{pod_relpath}/{name}"
        # Unknown runtime naming: any child named after the id.
        for child in self._subdirs(self.layout.unified_dir(pod_relpath)):
            if container_id_from_dirname(child) == container_id:
                return f"{pod_relpath}/{child}"
        return None

    def resolve(self, pods: Iterable[PodInfo]) -> PodIndex:
        """Index every cgroup of the given pods by id.

        The pod directory counts for the pod with ``container=""``; a
        container's directory and everything below it for that container.
        Children that are no known container (the sandbox/pause container,
        runtime helpers) count for the pod. Pods whose directory does not
        exist yet are listed in ``unresolved`` and simply retried later."""
        entries: dict[int, CgroupEntry] = {}
        pod_map: dict[str, PodInfo] = {}
        pod_paths: dict[str, str] = {}
        unresolved: list[str] = []
        for pod in pods:
            pod_map[pod.uid] = pod
            rel = self.pod_dir(pod.uid, pod.qos_class)
            if rel is None:
                unresolved.append(pod.uid)
                continue
            try:
                pod_id = cgroup_id(self.layout.unified_dir(rel))
            except OSError:  # removed between the search and now
                unresolved.append(pod.uid)
                continue
            pod_paths[pod.uid] = rel
            entries[pod_id] = CgroupEntry(pod_id, rel, pod.namespace, pod.name, "", pod.uid)
            by_id = {c.container_id: c.name for c in pod.containers if c.container_id}
            for child_rel, child_id, depth_one_name in self._walk(rel):
                container = by_id.get(container_id_from_dirname(depth_one_name), "")
                entries[child_id] = CgroupEntry(child_id, child_rel, pod.namespace, pod.name, container, pod.uid)
        return PodIndex(entries=entries, pods=pod_map, pod_paths=pod_paths, unresolved=tuple(unresolved))

    # -- mode none: the whole host -------------------------------------------

    def host_index(self) -> PodIndex:
        """Every cgroup2 directory as its own "pod" in namespace ``host``.

        Label ``pod`` is the path relative to the cgroup2 mount; the root
        cgroup itself, whose relative path is empty, is labelled ``/`` so the
        tasks that live there (kernel threads, unmanaged processes) are
        attributed rather than lost. Each cgroup also appears in ``pods`` with
        that label as its uid, so consumers treat both modes alike."""
        paths = self._walk_host()
        entries: dict[int, CgroupEntry] = {}
        pods: dict[str, PodInfo] = {}
        pod_paths: dict[str, str] = {}
        for cid, rel in paths.items():
            entries[cid] = entry = host_entry(cid, rel)
            label = entry.pod
            pods[label] = PodInfo(uid=label, namespace="host", name=label, labels={},
                                  qos_class=None, containers=())
            pod_paths[label] = rel
        return PodIndex(entries=entries, pods=pods, pod_paths=pod_paths)

    def lookup_path(self, cgroup_id: int) -> str | None:
        """Relative path of a cgroup id the last walk did not see (mode none).

        On a real cgroup2 mount the kernel answers directly: the id is a
        kernfs file handle (open_by_handle_at, needs CAP_DAC_READ_SEARCH).
        Otherwise the tree is walked again, at most once per REWALK_INTERVAL,
        so ids of cgroups that are already gone cost a dictionary lookup."""
        rel = self._host_paths.get(cgroup_id)
        if rel is not None:
            return rel
        if self._handles_ok:
            try:
                found = path_by_id(self.layout.unified, cgroup_id)
            except OSError as exc:
                log.info("cgroup id lookup by file handle unavailable (%s): walking the tree instead", exc)
                self._handles_ok = False
            else:
                if found is not None:
                    self._host_paths[cgroup_id] = found
                return found
        if time.monotonic() - self._last_walk < REWALK_INTERVAL:
            return None
        return self._walk_host().get(cgroup_id)

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _subdirs(path: Path) -> list[str]:
        try:
            with os.scandir(path) as it:
                return [e.name for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            return []

    def _walk(self, rel: str) -> Iterator[tuple[str, int, str]]:
        """(relpath, id, name of the first-level child it is under) for every directory below `rel`."""
        first_level = self._subdirs(self.layout.unified_dir(rel))
        stack: list[tuple[str, str]] = [(_join(rel, name), name) for name in first_level]
        while stack:
            child_rel, top = stack.pop()
            try:
                child_id = cgroup_id(self.layout.unified_dir(child_rel))
            except OSError:
                continue
            yield child_rel, child_id, top
            stack.extend((_join(child_rel, name), top) for name in self._subdirs(self.layout.unified_dir(child_rel)))

    def _walk_host(self) -> dict[int, str]:
        paths: dict[int, str] = {}
        try:
            paths[cgroup_id(self.layout.unified)] = ""
        except OSError as exc:
            raise CgroupError(f"cgroup2 mount {self.layout.unified} is gone: {exc}") from exc
        for child_rel, child_id, _ in self._walk(""):
            if len(paths) >= self.max_host_cgroups:
                log.warning(
                    "more than %d cgroups under %s: the rest are not indexed",
                    self.max_host_cgroups,
                    self.layout.unified,
                )
                break
            paths[child_id] = child_rel
        self._host_paths = paths
        self._last_walk = time.monotonic()
        return paths


# struct file_handle for a kernfs node: 8 bytes of cgroup id (include/linux/exportfs.h).
FILEID_KERNFS = 0xFE
_libc: ctypes.CDLL | None = None


def path_by_id(unified: Path, cgroup_id: int) -> str | None:
    """Relative path of the cgroup2 directory with this id, asked from the kernel.

    None when no such cgroup exists (any more); OSError when the lookup
    itself is not possible here (no privilege, not a cgroup2 mount)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if not 0 < cgroup_id < 2**64:
        return None
    handle = ctypes.create_string_buffer(struct.pack("=IiQ", 8, FILEID_KERNFS, cgroup_id))
    mount_fd = os.open(unified, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _libc.open_by_handle_at(mount_fd, handle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            if err in (errno.ESTALE, errno.ENOENT):
                return None
            raise OSError(err, os.strerror(err))
        try:
            target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        finally:
            os.close(fd)
    finally:
        os.close(mount_fd)
    try:
        rel = target.relative_to(unified.resolve())
    except ValueError:
        return None  # outside our view of the mount (another cgroup namespace)
    return "" if str(rel) == "." else str(rel)


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def host_label(relpath: str) -> str:
    """The ``pod`` label of a cgroup in mode none: its relative path, ``/`` for the root."""
    return relpath or "/"


def host_entry(cgroup_id: int, relpath: str) -> CgroupEntry:
    """A cgroup as its own "pod" in namespace ``host`` (mode none): the walk's
    and, for cgroups made after it, the agent's lookup by id."""
    label = host_label(relpath)
    return CgroupEntry(cgroup_id, relpath, "host", label, "", label)
