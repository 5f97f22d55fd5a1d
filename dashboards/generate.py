"""Generates dashboards/kpod-metrics.json, the Grafana dashboard of kpod-metrics,
and its copy in the operator's package (the ConfigMap the operator renders
for the Grafana sidecar when the fleet profile asks for it).

One row per collector (titled with its config key, so a test can check that
every collector has one), per-pod panels filtered by the node / namespace /
pod variables, then the agent's own health. Written as code so that every
panel has the same shape; the JSON is committed for importing through the
Grafana UI or a dashboard ConfigMap, and a test keeps it in sync:

    python dashboards/generate.py            # rewrite the JSON
    python dashboards/generate.py --check    # exit 1 when the JSON is stale
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from dataclasses import dataclass, field

OUTPUT = pathlib.Path(__file__).with_name("kpod-metrics.json")
OPERATOR_ASSET = pathlib.Path(__file__).parents[1] / "operator" / "kpod_operator" / "assets" / "kpod-metrics.json"
OUTPUTS = (OUTPUT, OPERATOR_ASSET)

POD = 'namespace=~"$namespace", pod=~"$pod", node=~"$node"'
NODE = 'node=~"$node"'
RATE = "$__rate_interval"
POD_LEGEND = "{{namespace}}/{{pod}}"
# l7 statuses that are failures (HTTP 5xx, DNS server failures, error replies).
L7_ERRORS = POD + ', status=~"5..|SERVFAIL|REFUSED|error"'


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"  # or "table": one instant query, a row per series


@dataclass(frozen=True)
class Row:
    title: str
    collector: str  # config key, or "" for rows that are not a collector
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def rate(metric: str, by: str = "namespace, pod", sel: str = POD) -> str:
    return f"sum by ({by}) (rate({metric}{{{sel}}}[{RATE}]))"


def quantile(q: float, metric: str, by: str = "namespace, pod", sel: str = POD) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[{RATE}])))"


def gauge(metric: str, by: str = "namespace, pod", sel: str = POD) -> str:
    return f"sum by ({by}) ({metric}{{{sel}}})"


def p99(title: str, metric: str, by: str = "namespace, pod", legend: str = POD_LEGEND, sel: str = POD) -> Panel:
    return Panel(title, ((quantile(0.99, metric, by, sel), legend),), "s")


def rates(title: str, metric: str, unit: str = "ops", by: str = "namespace, pod", legend: str = POD_LEGEND) -> Panel:
    return Panel(title, ((rate(metric, by), legend),), unit)


def gauges(title: str, metric: str, unit: str = "bytes", by: str = "namespace, pod", legend: str = POD_LEGEND) -> Panel:
    return Panel(title, ((gauge(metric, by), legend),), unit)


EDGE = "source, destination, port, protocol"
EDGE_LEGEND = "{{source}} → {{destination}} {{protocol}}:{{port}}"


def edge_rate(metric: str) -> str:
    """Per edge, the larger of its sides; edges with either end in the chosen namespaces."""
    return " or ".join(
        f'max by ({EDGE}) (rate({metric}{{{NODE}, {end}=~"($namespace)/.*"}}[{RATE}]))'
        for end in ("source", "destination"))


ROWS: tuple[Row, ...] = (
    Row("CPU scheduling", "cpu", (
        p99("Run-queue latency p99", "kpod_cpu_runqueue_latency_seconds"),
        rates("Context switches", "kpod_cpu_context_switches_total"),
        Panel("CPU throttled time (share of a second)",
              ((rate("kpod_cpu_throttled_seconds_total"), POD_LEGEND),), "percentunit"),
        rates("Throttled periods", "kpod_cpu_throttled_periods_total"),
    )),
    Row("TCP network", "network", (
        Panel("TCP throughput", (
            (rate("kpod_net_tcp_bytes_sent_total"), POD_LEGEND + " sent"),
            (f"-{rate('kpod_net_tcp_bytes_received_total')}", POD_LEGEND + " received"),
        ), "Bps"),
        rates("TCP retransmits", "kpod_net_tcp_retransmits_total"),
        rates("TCP connections", "kpod_net_tcp_connections_total"),
        p99("TCP RTT p99", "kpod_net_tcp_rtt_seconds"),
        p99("TCP connect latency p99", "kpod_net_tcp_connection_latency_seconds"),
    )),
    Row("Memory events", "memory", (
        Panel("OOM kills",
              ((f"sum by (namespace, pod, container) (increase(kpod_mem_oom_kills_total{{{POD}}}[{RATE}]))",
                POD_LEGEND + " {{container}}"),), "short"),
        rates("Major page faults", "kpod_mem_major_page_faults_total"),
        gauges("RSS", "kpod_mem_rss_bytes"),
        gauges("Working set", "kpod_mem_working_set_bytes"),
        gauges("Page cache", "kpod_mem_cache_bytes"),
    )),
    Row("Syscalls", "syscall", (
        rates("Syscalls by name", "kpod_syscall_count_total", by="namespace, pod, syscall",
              legend=POD_LEGEND + " {{syscall}}"),
        rates("Syscall errors by errno", "kpod_syscall_errors_total", by="namespace, pod, syscall, errno",
              legend=POD_LEGEND + " {{syscall}} {{errno}}"),
        Panel("Syscall error ratio", ((
            f"{rate('kpod_syscall_errors_total', 'namespace, pod, syscall')}"
            f" / {rate('kpod_syscall_count_total', 'namespace, pod, syscall')}",
            POD_LEGEND + " {{syscall}}"),), "percentunit"),
        p99("Syscall latency p99", "kpod_syscall_latency_seconds", by="namespace, pod, syscall",
            legend=POD_LEGEND + " {{syscall}}"),
    )),
    Row("TCP drops", "tcpdrop", (
        rates("TCP drops", "kpod_net_tcp_drops_total"),
    )),
    Row("Block I/O latency", "biolatency", (
        p99("Block I/O latency p99", "kpod_disk_io_latency_seconds"),
        Panel("Block I/O latency p50", ((quantile(0.5, "kpod_disk_io_latency_seconds"), POD_LEGEND),), "s"),
    )),
    Row("Page cache", "cachestat", (
        rates("Cache accesses", "kpod_mem_cache_accesses_total"),
        rates("Cache additions (misses)", "kpod_mem_cache_additions_total"),
        Panel("Cache hit ratio", ((
            f"1 - {rate('kpod_mem_cache_additions_total')} / {rate('kpod_mem_cache_accesses_total')}",
            POD_LEGEND),), "percentunit"),
        rates("Pages dirtied", "kpod_mem_cache_dirtied_total"),
        rates("Buffers dirtied", "kpod_mem_cache_buf_dirtied_total"),
    )),
    Row("Hardware interrupts (node)", "hardirqs", (
        p99("Hard IRQ latency p99", "kpod_irq_hw_latency_seconds", by="node, irq",
            legend="{{node}} {{irq}}", sel=NODE),
        Panel("Hard IRQs", ((rate("kpod_irq_hw_count_total", "node, irq", NODE), "{{node}} {{irq}}"),), "ops"),
    )),
    Row("Software interrupts (node)", "softirqs", (
        p99("Soft IRQ latency p99", "kpod_irq_sw_latency_seconds", by="node, vec",
            legend="{{node}} {{vec}}", sel=NODE),
    )),
    Row("Processes", "execsnoop", (
        rates("Execs", "kpod_proc_execs_total"),
        rates("Forks", "kpod_proc_forks_total"),
        rates("Exits", "kpod_proc_exits_total"),
    )),
    Row("Disk I/O (cgroup)", "diskIO", (
        Panel("Disk throughput", (
            (rate("kpod_disk_read_bytes_total", "namespace, pod, device"), POD_LEGEND + " {{device}} read"),
            (f"-{rate('kpod_disk_written_bytes_total', 'namespace, pod, device')}", POD_LEGEND + " {{device}} written"),
        ), "Bps"),
        Panel("Disk operations", (
            (rate("kpod_disk_reads_total", "namespace, pod, device"), POD_LEGEND + " {{device}} reads"),
            (f"-{rate('kpod_disk_writes_total', 'namespace, pod, device')}", POD_LEGEND + " {{device}} writes"),
        ), "iops"),
    )),
    Row("Interfaces (pod network namespace)", "ifaceNetwork", tuple(
        Panel(f"Interface {what}", (
            (rate(f"kpod_net_iface_rx_{what}_total", "namespace, pod, interface"), POD_LEGEND + " {{interface}} rx"),
            (f"-{rate(f'kpod_net_iface_tx_{what}_total', 'namespace, pod, interface')}",
             POD_LEGEND + " {{interface}} tx"),
        ), unit)
        for what, unit in (("bytes", "Bps"), ("packets", "pps"), ("errors", "pps"), ("drops", "pps"))
    )),
    Row("Filesystems", "filesystem", (
        Panel("Filesystem usage", ((
            f"{gauge('kpod_fs_usage_bytes', 'namespace, pod, mountpoint')}"
            f" / {gauge('kpod_fs_capacity_bytes', 'namespace, pod, mountpoint')}",
            POD_LEGEND + " {{mountpoint}}"),), "percentunit"),
        gauges("Filesystem available", "kpod_fs_available_bytes", by="namespace, pod, mountpoint",
               legend=POD_LEGEND + " {{mountpoint}}"),
    )),
    Row("Memory (cgroup)", "memoryCgroup", (
        gauges("Memory usage", "kpod_mem_cgroup_usage_bytes"),
        gauges("Memory peak", "kpod_mem_cgroup_peak_bytes"),
        gauges("Memory cache", "kpod_mem_cgroup_cache_bytes"),
        gauges("Swap", "kpod_mem_cgroup_swap_bytes"),
    )),
    # Application protocols (l7 collector).
    Row("Application protocols", "l7", (
        rates("Requests by protocol and operation", "kpod_l7_requests_total",
              by="namespace, pod, protocol, direction, operation",
              legend=POD_LEGEND + " {{protocol}} {{direction}} {{operation}}"),
        Panel("Request error ratio", ((
            f"{rate('kpod_l7_requests_total', 'namespace, pod, protocol, direction', L7_ERRORS)}"
            f" / {rate('kpod_l7_requests_total', 'namespace, pod, protocol, direction')}",
            POD_LEGEND + " {{protocol}} {{direction}}"),), "percentunit",
            "HTTP 5xx, DNS SERVFAIL/REFUSED, and error replies of the other protocols."),
        rates("Requests by status", "kpod_l7_requests_total", by="namespace, pod, protocol, status",
              legend=POD_LEGEND + " {{protocol}} {{status}}"),
        p99("Request latency p99", "kpod_l7_request_duration_seconds",
            by="namespace, pod, protocol, direction, operation",
            legend=POD_LEGEND + " {{protocol}} {{direction}} {{operation}}"),
    )),
    # Service topology: per-edge series of the network collector's edge store.
    # Each side of an edge is its own series (label side, and the observing
    # node): max over them counts an edge seen from both ends once.
    Row("Service topology (network)", "", (
        Panel("Edges by throughput", ((f"topk(50, {edge_rate('kpod_topology_edge_bytes_total')})", ""),), "Bps",
              "TCP edges between pods, Services and nodes; remote ends a node's agent cannot name are addresses "
              "(kpod-agent topology merges the agents' views and names them).", kind="table"),
        Panel("Edge throughput (top 10)", ((f"topk(10, {edge_rate('kpod_topology_edge_bytes_total')})",
                                            EDGE_LEGEND),), "Bps"),
        Panel("Edge connections (top 10)", ((f"topk(10, {edge_rate('kpod_topology_edge_connections_total')})",
                                             EDGE_LEGEND),), "cps"),
        Panel("Edges kept and evicted", (
            (f"sum by (node) (kpod_topology_edges{{{NODE}}})", "{{node}} kept"),
            (f"sum by (node) (rate(kpod_topology_edges_evicted_total{{{NODE}}}[{RATE}]))", "{{node}} evicted/s"),
        ), "short"),
    )),
    Row("Pods", "", (
        Panel("Container restarts", ((f"max by (namespace, pod, container) (kpod_container_restarts{{{POD}}})",
                                      POD_LEGEND + " {{container}}"),), "short"),
    )),
    Row("kpod agent health", "", (
        Panel("Agents up", (('sum(up{job="kpod-agent"})', "up"), ('count(up{job="kpod-agent"})', "targets")), "short"),
        Panel("Applied config generation", (("kpod_agent_config_generation", "{{instance}}"),), "short"),
        Panel("Collectors attached", (("sum by (collector) (kpod_collector_attached)", "{{collector}}"),), "short"),
        Panel("Collector errors", ((f"sum by (collector) (rate(kpod_collector_errors_total[{RATE}]))",
                                    "{{collector}}"),), "ops"),
        Panel("Collector skipped cycles", ((f"sum by (collector) (rate(kpod_collector_skipped_total[{RATE}]))",
                                            "{{collector}}"),), "ops"),
        Panel("Collector duration", (("max by (collector) (kpod_collector_duration_seconds)", "{{collector}}"),), "s"),
        Panel("Collection cycle duration", (("max by (instance) (kpod_collection_cycle_duration_seconds)",
                                             "{{instance}}"),), "s"),
        Panel("BPF map fill", (("max by (map) (kpod_bpf_map_entries / kpod_bpf_map_capacity)", "{{map}}"),),
              "percentunit"),
        Panel("BPF map update errors", ((f"sum by (map) (rate(kpod_bpf_map_update_errors_total[{RATE}]))",
                                         "{{map}}"),), "ops"),
        Panel("BPF program load time", (("max by (program) (kpod_bpf_program_load_duration_seconds)",
                                         "{{program}}"),), "s"),
        Panel("Config reloads", ((f"sum by (result) (rate(kpod_config_reloads_total[{RATE}]))", "{{result}}"),),
              "ops"),
        Panel("Pods discovered", (("kpod_discovery_pods", "{{instance}}"),), "short"),
        Panel("cgroup read errors", ((f"sum by (collector) (rate(kpod_cgroup_read_errors_total[{RATE}]))",
                                      "{{collector}}"),), "ops"),
    )),
)

PANEL_W, PANEL_H, GRID_W = 8, 8, 24
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def row_title(row: Row) -> str:
    return f"{row.title} · {row.collector}" if row.collector else row.title


def panel_json(panel: Panel, pid: int, x: int, y: int) -> dict:
    return {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": PANEL_W, "h": PANEL_H},
        "fieldConfig": {"defaults": {"unit": panel.unit, "custom": {"fillOpacity": 10}}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
             **({"format": "table", "instant": True} if panel.kind == "table" else {})}
            for i, (expr, legend) in enumerate(panel.exprs)
        ],
        **({"transformations": [{"id": "organize", "options": {
            "excludeByName": {"Time": True}, "renameByName": {"Value": "bytes/s"}}}],
            "options": {"showHeader": True, "sortBy": [{"displayName": "bytes/s", "desc": True}]}}
           if panel.kind == "table" else {}),
    }


def variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
        "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1,
    }


def build() -> dict:
    panels: list[dict] = []
    pid, y = 1, 0
    for row in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title(row), "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": GRID_W, "h": 1}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, panel in enumerate(row.panels):
            x = (i * PANEL_W) % GRID_W
            if i and x == 0:
                y += PANEL_H
            panels.append(panel_json(panel, pid, x, y))
            pid += 1
        y += PANEL_H
    return {
        "title": "kpod-metrics: per-pod kernel metrics",
        "uid": "kpod-metrics",
        "description": "Per-pod CPU, network, memory, syscall, disk and interrupt metrics from the kpod eBPF agents.",
        "tags": ["kpod-metrics", "ebpf", "kubernetes"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1},
            variable("node", "Node", "label_values(kpod_container_restarts, node)"),
            variable("namespace", "Namespace", 'label_values(kpod_container_restarts{node=~"$node"}, namespace)'),
            variable("pod", "Pod",
                     'label_values(kpod_container_restarts{node=~"$node", namespace=~"$namespace"}, pod)'),
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed JSON differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        stale = [path for path in OUTPUTS if not path.exists() or path.read_text() != text]
        for path in stale:
            print(f"{path} is stale: run python {pathlib.Path(__file__).name}", file=sys.stderr)
        return 1 if stale else 0
    for path in OUTPUTS:
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
