"""network: TCP bytes, connections, retransmits, RTT and connect latency (bpf/network.c)."""
from __future__ import annotations

from collections.abc import Iterable

from kpod_agent.collectors.base import BpfCollector, as_int, CgroupTarget, MetricSpec, Snapshot, hist_from


class NetworkCollector(BpfCollector):
    name = "network"
    source = "network.c"
    cgroup_maps = ("tcp_counts", "tcp_rtt", "tcp_connect_latency")
    specs = (
        MetricSpec("kpod_net_tcp_bytes_sent_total", "TCP payload bytes sent by the cgroup's sockets.", "counter"),
        MetricSpec("kpod_net_tcp_bytes_received_total", "TCP payload bytes received by the cgroup's sockets.", "counter"),
        MetricSpec("kpod_net_tcp_retransmits_total", "TCP segments retransmitted on the cgroup's sockets.", "counter"),
        MetricSpec("kpod_net_tcp_connections_total",
                   "TCP connections opened (connect) or accepted and used by the cgroup.", "counter"),
        MetricSpec("kpod_net_tcp_rtt_seconds", "Smoothed TCP round-trip time, sampled per received segment.",
                   "histogram", unit_seconds=1e-6),
        MetricSpec("kpod_net_tcp_connection_latency_seconds", "Time from SYN sent to connection established.",
                   "histogram", unit_seconds=1e-9),
    )

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        snap = Snapshot()
        for key, value in self.read_map("tcp_counts"):
            cgid = as_int(key)
            snap.add("kpod_net_tcp_bytes_sent_total", cgid, float(value.bytes_sent))
            snap.add("kpod_net_tcp_bytes_received_total", cgid, float(value.bytes_received))
            snap.add("kpod_net_tcp_retransmits_total", cgid, float(value.retransmits))
            snap.add("kpod_net_tcp_connections_total", cgid, float(value.connections))
        for key, value in self.read_map("tcp_rtt"):
            snap.add("kpod_net_tcp_rtt_seconds", as_int(key), hist_from(value))
        for key, value in self.read_map("tcp_connect_latency"):
            snap.add("kpod_net_tcp_connection_latency_seconds", as_int(key), hist_from(value))
        return snap
