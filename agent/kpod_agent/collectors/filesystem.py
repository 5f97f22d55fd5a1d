"""filesystem: capacity, usage and available bytes of each container's
writable filesystems (its root and its volumes), as df shows them.

Mounts come from /proc/<pid>/mountinfo of a task of the container and are
measured with statvfs through /proc/<pid>/root, i.e. inside the container's
mount namespace. Skipped, to keep series meaningful and few:
 - read-only mounts (secrets, config maps, projected tokens, ro volumes);
 - kernel and memory filesystems (proc, sysfs, cgroup, devpts, mqueue,
   tmpfs, ...): tmpfs usage is memory, already in the memory metrics;
 - bind mounts of single files (/etc/hosts, /etc/resolv.conf,
   /dev/termination-log): they show the host disk under the kubelet's dir;
 - tasks in the node's mount namespace, or the agent's (they would list
   the node's mounts).
statvfs on a dead network filesystem can block: each call has a deadline,
and a mount that missed it is skipped for HUNG_RETRY_SECONDS.
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kpod_agent.collectors.base import (
    CgroupFileCollector,
    CgroupTarget,
    CollectorContext,
    MetricSpec,
    Snapshot,
    cgroup_pid,
)
from kpod_agent.collectors.iface_network import node_namespaces
from kpod_agent.config import AgentConfig

PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "tmpfs", "devtmpfs", "ramfs",
    "securityfs", "debugfs", "tracefs", "bpf", "hugetlbfs", "pstore", "configfs", "fusectl",
    "binfmt_misc", "autofs", "nsfs", "rpc_pipefs", "selinuxfs", "efivarfs", "nfsd", "fuse.lxcfs",
})
STATVFS_TIMEOUT = 1.0
HUNG_RETRY_SECONDS = 300.0
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    fstype: str
    source: str
    read_only: bool


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """/proc/<pid>/mountinfo -> mounts, the visible one per mountpoint (a
    later mount on the same point hides the earlier)."""
    mounts: dict[str, Mount] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        options = set(fields[5].split(","))
        super_options = set(tail[2].split(",")) if len(tail) > 2 else set()
        mountpoint = _unescape(fields[4])
        mounts.pop(mountpoint, None)  # re-insert: keeps mount order
        mounts[mountpoint] = Mount(mountpoint, tail[0], _unescape(tail[1]),
                                   "ro" in options or "ro" in super_options)
    return list(mounts.values())


def writable_mounts(mounts: Iterable[Mount]) -> list[Mount]:
    return [m for m in mounts if not m.read_only and m.fstype not in PSEUDO_FILESYSTEMS]


def dir_statvfs(path: str) -> os.statvfs_result | None:
    """statvfs of a mounted directory; None for a bind-mounted file."""
    if not stat.S_ISDIR(os.stat(path).st_mode):
        return None
    return os.statvfs(path)


def df_figures(st: os.statvfs_result) -> dict[str, int]:
    """statvfs -> capacity, usage (blocks not free) and available (for
    unprivileged users), in bytes, as df computes them."""
    return {
        "capacity": st.f_blocks * st.f_frsize,
        "usage": (st.f_blocks - st.f_bfree) * st.f_frsize,
        "available": st.f_bavail * st.f_frsize,
    }


class FilesystemCollector(CgroupFileCollector):
    name = "filesystem"
    specs = (
        MetricSpec("kpod_fs_capacity_bytes", "Size of the filesystem mounted in the container.", "gauge",
                   labels=("mountpoint",)),
        MetricSpec("kpod_fs_usage_bytes", "Bytes used on the filesystem mounted in the container.", "gauge",
                   labels=("mountpoint",)),
        MetricSpec("kpod_fs_available_bytes", "Bytes available to unprivileged users on the filesystem.",
                   "gauge", labels=("mountpoint",)),
    )

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._hung: dict[tuple[str, str], float] = {}

    def attach(self, config: AgentConfig) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="kpod-statvfs")
        super().attach(config)

    def detach(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        super().detach()

    def _statvfs(self, path: str, mount: Mount) -> os.statvfs_result | None:
        key = (mount.source, mount.fstype)
        hung_at = self._hung.get(key)
        if hung_at is not None and time.monotonic() - hung_at < HUNG_RETRY_SECONDS:
            return None
        if self._pool is None:
            return dir_statvfs(path)
        future = self._pool.submit(dir_statvfs, path)
        try:
            result = future.result(timeout=STATVFS_TIMEOUT)
        except concurrent.futures.TimeoutError:
            self._hung[key] = time.monotonic()
            raise OSError(f"statvfs {path} did not answer in {STATVFS_TIMEOUT}s") from None
        self._hung.pop(key, None)
        return result

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        snap = Snapshot()
        proc = self.ctx.proc_root
        host_mntns = node_namespaces(proc, "mnt")
        chosen = self.chosen(targets, "containers")
        for target in chosen:
            pid = cgroup_pid(self.ctx.layout.unified_dir(target.relpath))
            if pid is None:
                continue
            try:
                if os.stat(f"{proc}/{pid}/ns/mnt").st_ino in host_mntns:
                    continue
                mounts = writable_mounts(parse_mountinfo(Path(f"{proc}/{pid}/mountinfo").read_text()))
            except FileNotFoundError:  # the task exited meanwhile
                continue
            except OSError:
                self.cgroup_read_errors += 1
                continue
            root = f"{proc}/{pid}/root"
            for mount in mounts:
                path = root + mount.mountpoint
                try:
                    result = self._statvfs(path, mount)
                except FileNotFoundError:
                    continue
                except OSError:
                    self.cgroup_read_errors += 1
                    continue
                if result is None:
                    continue
                for name, value in df_figures(result).items():
                    snap.add(f"kpod_fs_{name}_bytes", target.cgroup_id, float(value), (mount.mountpoint,))
        return snap
