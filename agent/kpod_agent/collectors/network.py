"""network: TCP bytes, connections, retransmits, RTT and connect latency (bpf/network.c)."""
from __future__ import annotations

from kpod_agent.collectors.base import BpfCollector, MetricSpec


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
