"""What the agent saw at one moment, frozen: the exporter's only input.

The agent publishes a new `CollectionView` after every collection cycle,
applied or rejected config and pod list; the exporter renders from the
latest one and never reads the agent's working state, so a scrape sees one
consistent cycle (config, pods, filters and readings of the same moment).

The rules both sides need live here once: which cgroups a file-reading
collector reads (`read_targets`) and which pod a cgroup id is
(`cgroup_entry`); what is counted at all is decided in filters.py.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kpod_agent import filters, topology
from kpod_agent.collectors.base import CgroupTarget, Hist, MetricSpec, Snapshot, TargetRole
from kpod_agent.config import AgentConfig
from kpod_agent.pods import CgroupEntry, PodIndex

EMPTY_INDEX = PodIndex(entries={}, pods={})


def top_cgroups(index: PodIndex) -> dict[str, TargetRole]:
    """relpath -> "pod" or "container": the pod's own cgroup and each
    container's top one. Stat files are hierarchical, so these are the only
    cgroups whose files are read: reading descendants too counts them twice."""
    return {path: "container" if container else "pod"
            for uid in index.pods for container, path in index.container_paths(uid).items()}


def read_targets(index: PodIndex, allowed: Mapping[int, int] | None,
                 tops: Mapping[str, TargetRole]) -> list[CgroupTarget]:
    """The cgroups a collector with this filter reads files of (`tops` is
    `top_cgroups(index)`); with no filter every cgroup, each its own series."""
    if allowed is None:
        return [CgroupTarget(cgid, e.relpath, "cgroup") for cgid, e in index.entries.items()]
    targets = []
    for cgid in allowed:
        entry = index.entries.get(cgid)
        role = tops.get(entry.relpath) if entry is not None else None
        if entry is not None and role is not None:
            targets.append(CgroupTarget(cgid, entry.relpath, role))
    return targets


def cgroup_entry(cgroup_id: int, allowed: Mapping[int, int] | None, index: PodIndex,
                 resolved: Mapping[int, CgroupEntry]) -> CgroupEntry | None:
    """The pod (or, in mode none, the cgroup) a collector's series of this
    cgroup id belongs to; None when it is no counted pod's: such series are
    counted in kpod_unknown_cgroup_events_total, never shown."""
    if allowed is not None and cgroup_id not in allowed:
        return None
    return index.entries.get(cgroup_id) or resolved.get(cgroup_id)


def amount(value: float | Hist) -> float:
    """What a value adds to the unknown-cgroup count: a counter its value,
    a histogram its observations."""
    return float(sum(value.slots)) if isinstance(value, Hist) else float(value)


@dataclass(frozen=True)
class CollectorView:
    """One collector as of the view: its specs, last reading and health."""

    name: str
    specs: tuple[MetricSpec, ...]
    attached: bool
    snapshot: Snapshot | None
    allowed: Mapping[int, int] | None
    """The collector's cgroup filter; None counts every cgroup (mode none)."""
    resolved: Mapping[int, CgroupEntry]
    """Cgroups of the snapshot that the index lacked, found when read (mode none)."""
    duration: float = 0.0
    errors_total: int = 0
    skipped_total: int = 0
    cgroup_read_errors: int = 0
    load_seconds: float | None = None
    map_stats: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    map_update_errors: Mapping[str, int] = field(default_factory=dict)
    pods_not_counted: int = 0
    unknown_events: Mapping[str, float] = field(default_factory=dict)
    """metric -> what BPF counted for cgroup ids that are no counted pod's."""
    attached_ns: int = 0
    """Wall clock (ns) of the attach its counters count from; 0: unknown."""

    def entry(self, index: PodIndex, cgroup_id: int) -> CgroupEntry | None:
        return cgroup_entry(cgroup_id, self.allowed, index, self.resolved)


@dataclass(frozen=True)
class CollectionView:
    node_name: str
    config: AgentConfig | None = None
    index: PodIndex = EMPTY_INDEX
    filters: Mapping[str, Mapping[int, int] | None] = field(default_factory=dict)
    """The filters the pod index makes (one object per pod list and config)."""
    collectors: Mapping[str, CollectorView] = field(default_factory=dict)
    reloads_success: int = 0
    reloads_error: int = 0
    discovery_errors: int = 0
    cycle_duration: float = 0.0
    otlp_exports: Mapping[str, int] = field(default_factory=dict)
    """result (success / error) -> OTLP pushes since start."""
    services: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Service ClusterIP -> (namespace, name), from discovery (informer mode only)."""

    @functools.cached_property
    def topology(self) -> dict[str, Any]:
        """`topology_document` of this view, made once (10,000 edges take 0.3-0.55 s):
        /topology and the exporter's per-edge series share it. Read only."""
        return topology_document(self)

    @property
    def count_all(self) -> bool:
        return self.config is not None and filters.counts_every_cgroup(self.config)


def topology_document(v: CollectionView) -> dict[str, Any]:
    """The node's `/topology` answer: the network collector's edges whose
    socket owner is a counted pod (the others are no pod's to name), with
    the l7 collector's requests and protocol on them when it runs."""
    network = v.collectors.get("network")
    snapshot = network.snapshot if network is not None else None
    book = topology.address_book(v.index, v.services)
    entries = []
    for key, counts in snapshot.edges if snapshot is not None else ():
        assert network is not None
        entry = network.entry(v.index, key.cgroup_id)
        if entry is None:
            continue
        pod = v.index.pods.get(entry.pod_uid)
        local = ({"node": pod.node_name} if pod is not None and pod.host_network
                 else topology.pod_end(entry.namespace, entry.pod))
        entries.append((key, counts, local))
    evicted = snapshot.edges_evicted if snapshot is not None else 0
    return topology.node_document(v.node_name, entries, book, evicted, _parsed_requests(v))


def _parsed_requests(v: CollectionView) -> dict[topology.EdgeKey, list[topology.EdgeRequests]]:
    """The l7 collector's requests per edge entry (empty when it is off)."""
    l7 = v.collectors.get("l7")
    parsed: dict[topology.EdgeKey, list[topology.EdgeRequests]] = {}
    if l7 is not None and l7.snapshot is not None:
        for key, requests in l7.snapshot.edge_requests:
            parsed.setdefault(key, []).append(requests)
    return parsed
