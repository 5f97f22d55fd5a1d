"""The pod model: pods, their containers, and which cgroup ids are theirs. Pure.

``PodInfo`` is what a discovery source lists (kubelet ``/pods`` or the API
server), ``PodIndex`` what the cgroup resolver builds from it: cgroup id ->
namespace/pod/container. Both are immutable, so a published index can be
read by scrapes and collections without a lock. No I/O and nothing heavy is
imported here: the filters, the cgroup resolver and the discovery sources all
build on this module.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Static pods: the API's mirror pod carries the kubelet's own uid (the one in
# cgroup names) in this annotation.
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    runtime: str
    """containerID scheme: containerd, cri-o, docker; "" when not started yet."""
    container_id: str
    restart_count: int


@dataclass(frozen=True)
class PodInfo:
    uid: str
    """The uid in the pod's cgroup name (for static pods: the kubelet's, not the mirror pod's)."""
    namespace: str
    name: str
    labels: Mapping[str, str]
    qos_class: str | None
    containers: tuple[ContainerInfo, ...]
    node_name: str = ""
    ips: tuple[str, ...] = ()
    """status.podIPs (or status.podIP): what the pod's peers see as its address."""
    host_network: bool = False
    """spec.hostNetwork: the pod shares its node's addresses."""


def _str_dict(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


def parse_container_id(container_id: str) -> tuple[str, str]:
    """``containerd://abc`` -> ``("containerd", "abc")``; ValueError when malformed."""
    runtime, sep, ident = container_id.partition("://")
    if not sep or not runtime or not ident or "/" in ident:
        raise ValueError(f"not a <runtime>://<id> container id: {container_id!r}")
    return runtime, ident


def _container(status: Any) -> ContainerInfo | None:
    if not isinstance(status, dict) or not isinstance(status.get("name"), str):
        return None
    runtime, ident = "", ""
    raw_id = status.get("containerID")
    if isinstance(raw_id, str) and raw_id:
        try:
            runtime, ident = parse_container_id(raw_id)
        except ValueError:
            pass
    restarts = status.get("restartCount", 0)
    return ContainerInfo(
        name=status["name"], runtime=runtime, container_id=ident,
        restart_count=restarts if isinstance(restarts, int) and not isinstance(restarts, bool) else 0,
    )


def pod_from_api(obj: dict) -> PodInfo | None:
    """A Pod JSON (kubelet /pods item or API object) -> PodInfo.

    None for what has no cgroup on a node: malformed objects, pods not
    scheduled yet (no spec.nodeName) and finished pods (Succeeded/Failed,
    whose cgroups kubelet has removed). Pending scheduled pods are kept: their
    sandbox cgroup appears soon and the resolver retries it.

    Containers come from init, regular and ephemeral container statuses:
    a running init container does real work that belongs to its pod, and
    restart counts matter for containers that are not running. A status
    without a containerID (not started yet) has runtime and id "".
    """
    if not isinstance(obj, dict):
        return None
    meta = obj.get("metadata")
    spec = obj.get("spec")
    status = obj.get("status")
    meta = meta if isinstance(meta, dict) else {}
    spec = spec if isinstance(spec, dict) else {}
    status = status if isinstance(status, dict) else {}
    uid = uid_of(obj)
    name, namespace = meta.get("name"), meta.get("namespace")
    if not all(isinstance(v, str) and v for v in (uid, name, namespace)):
        return None
    node = spec.get("nodeName")
    if not isinstance(node, str) or not node:
        return None
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    containers: list[ContainerInfo] = []
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        statuses = status.get(key)
        for st in statuses if isinstance(statuses, list) else []:
            info = _container(st)
            if info is not None:
                containers.append(info)
    qos = status.get("qosClass")
    host_network = spec.get("hostNetwork") is True
    return PodInfo(
        uid=str(uid), namespace=str(namespace), name=str(name),
        labels=_str_dict(meta.get("labels")),
        qos_class=qos if isinstance(qos, str) and qos else None,
        containers=tuple(containers), node_name=node,
        ips=pod_ips(status), host_network=host_network,
    )


def pod_ips(status: dict) -> tuple[str, ...]:
    """status.podIPs, else status.podIP; entries that are no IP address are left out."""
    raw: list[Any] = []
    listed = status.get("podIPs")
    if isinstance(listed, list):
        raw = [item.get("ip") for item in listed if isinstance(item, dict)]
    if not raw:
        raw = [status.get("podIP")]
    ips: list[str] = []
    for value in raw:
        if not isinstance(value, str):
            continue
        try:
            text = str(ipaddress.ip_address(value))
        except ValueError:
            continue
        if text not in ips:
            ips.append(text)
    return tuple(ips)


@dataclass(frozen=True)
class CgroupEntry:
    cgroup_id: int
    relpath: str
    """Path relative to the cgroup2 mount (``CgroupLayout.unified``)."""
    namespace: str
    pod: str
    container: str
    """"" for the pod-level cgroup and cgroups of no known container (sandbox)."""
    pod_uid: str


@dataclass(frozen=True)
class PodIndex:
    """An immutable snapshot: cgroup id -> identity, and the pods behind it."""

    entries: Mapping[int, CgroupEntry] = field(default_factory=dict)
    pods: Mapping[str, PodInfo] = field(default_factory=dict)
    pod_paths: Mapping[str, str] = field(default_factory=dict)
    """uid -> relative path of the pod-level cgroup (its stat files cover all containers)."""
    unresolved: tuple[str, ...] = ()
    """uids of listed pods whose cgroup directory is not there (yet)."""
    _by_pod: Mapping[str, list[CgroupEntry]] = field(
        init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        by_pod: dict[str, list[CgroupEntry]] = {}
        for entry in self.entries.values():
            by_pod.setdefault(entry.pod_uid, []).append(entry)
        for group in by_pod.values():
            group.sort(key=lambda e: e.relpath)
        object.__setattr__(self, "_by_pod", by_pod)

    def lookup(self, cgroup_id: int) -> CgroupEntry | None:
        return self.entries.get(cgroup_id)

    def pod_cgroups(self, uid: str) -> list[CgroupEntry]:
        """Every cgroup of the pod, the pod-level one first (sorted by path)."""
        return list(self._by_pod.get(uid, ()))

    def container_paths(self, uid: str) -> dict[str, str]:
        """container name -> relpath of its top cgroup ("" -> the pod's own).

        Stat files are hierarchical: read these, not every descendant, or
        nested cgroups are counted twice."""
        out: dict[str, str] = {}
        pod_path = self.pod_paths.get(uid)
        if pod_path is not None:
            out[""] = pod_path
        for entry in self._by_pod.get(uid, ()):
            if entry.container and entry.container not in out:
                out[entry.container] = entry.relpath  # sorted: the shallowest comes first
        return out


def uid_of(obj: dict) -> str | None:
    """The cgroup uid of a Pod JSON, even of one pod_from_api refuses (for deletions)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None
    mirror = _str_dict(meta.get("annotations")).get(MIRROR_ANNOTATION)
    uid = mirror or meta.get("uid")
    return uid if isinstance(uid, str) else None
