"""network: TCP bytes, connections, retransmits, RTT and connect latency (bpf/network.c),
and the TCP edges of the service topology (map tcp_edges, kept in a bounded `EdgeStore`)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kpod_agent import topology
from kpod_agent.collectors.base import BpfCollector, CgroupTarget, CollectorContext, MetricSpec, Snapshot, delete_keys
from kpod_agent.config import AgentConfig

_ROLES: dict[int, topology.Role] = {1: "client", 2: "server"}


class NetworkCollector(BpfCollector):
    name = "network"
    source = "network.c"
    specs = (
        MetricSpec("kpod_net_tcp_bytes_sent_total", "TCP payload bytes sent by the cgroup's sockets.", "counter",
                   map="tcp_counts", value="bytes_sent"),
        MetricSpec("kpod_net_tcp_bytes_received_total", "TCP payload bytes received by the cgroup's sockets.",
                   "counter", map="tcp_counts", value="bytes_received"),
        MetricSpec("kpod_net_tcp_retransmits_total", "TCP segments retransmitted on the cgroup's sockets.",
                   "counter", map="tcp_counts", value="retransmits"),
        MetricSpec("kpod_net_tcp_connections_total",
                   "TCP connections opened (connect) or accepted and used by the cgroup.", "counter",
                   map="tcp_counts", value="connections"),
        MetricSpec("kpod_net_tcp_rtt_seconds", "Smoothed TCP round-trip time, sampled per received segment.",
                   "histogram", unit_seconds=1e-6, map="tcp_rtt"),
        MetricSpec("kpod_net_tcp_connection_latency_seconds", "Time from SYN sent to connection established.",
                   "histogram", unit_seconds=1e-9, map="tcp_connect_latency"),
    )
    cgroup_maps = ("tcp_counts", "tcp_rtt", "tcp_connect_latency", "tcp_edges")

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self.edges = topology.EdgeStore()

    def cflags(self, config: AgentConfig) -> list[str]:
        # The largest cap (the map is not preallocated): a new maxEdges needs no reload.
        return [*super().cflags(config), f"-DKPOD_MAX_EDGES={topology.MAX_EDGES}"]

    def attach(self, config: AgentConfig) -> None:
        self.edges.resize(config.topology.maxEdges)
        super().attach(config)

    def reconfigure(self, config: AgentConfig) -> bool:
        self._delete_edges(self.edges.resize(config.topology.maxEdges))
        return True

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        snap = super().collect(targets)
        reading = dict(_edge_entry(key, value) for key, value in self.read_map("tcp_edges"))
        self._delete_edges(self.edges.update(reading))
        snap.edges = tuple(self.edges.items())
        snap.edges_evicted = self.edges.evicted_total
        return snap

    def forget(self, cgroup_ids: set[int]) -> None:
        super().forget(cgroup_ids)
        self.edges.forget(cgroup_ids)

    def _delete_edges(self, keys: list[topology.EdgeKey]) -> None:
        if not keys or self.bpf is None:
            return
        table = self.bpf["tcp_edges"]
        raw = []
        for key in keys:
            k = table.Key()
            k.cgid = key.cgroup_id
            k.peer.local[:] = list(topology.ip_bytes(key.local))
            k.peer.remote[:] = list(topology.ip_bytes(key.remote))
            k.peer.port = key.port
            k.peer.role = 1 if key.role == "client" else 2
            raw.append(k)
        delete_keys(table, raw)


def edge_key(key: Any) -> topology.EdgeKey:
    """A kernel edge key ({cgid, peer}; the l7 collector's has the same) as an EdgeKey."""
    peer = key.peer
    return topology.EdgeKey(
        cgroup_id=int(key.cgid), local=topology.ip_text(bytes(peer.local)),
        remote=topology.ip_text(bytes(peer.remote)), port=int(peer.port), role=_ROLES.get(int(peer.role), "client"))


def _edge_entry(key: Any, value: Any) -> tuple[topology.EdgeKey, topology.EdgeCounts]:
    edge = edge_key(key)
    counts = topology.EdgeCounts(
        connections=int(value.connections), bytes_sent=int(value.bytes_sent),
        bytes_received=int(value.bytes_received), retransmits=int(value.retransmits),
        rtt_slots=tuple(int(x) for x in value.rtt.slots), rtt_sum_us=int(value.rtt.sum))
    return edge, counts
