"""The metric names the project exposes (docs/reference/metrics.md), written
out as the asset checks see them: dashboards and rules may only use these,
and must cover the per-pod ones. A test keeps this list equal to the
generated reference."""

from __future__ import annotations

import re

# collector config key -> series it exports (histograms by base name).
COLLECTOR_METRICS: dict[str, tuple[str, ...]] = {
    "cpu": ("kpod_cpu_runqueue_latency_seconds", "kpod_cpu_context_switches_total",
            "kpod_cpu_throttled_seconds_total", "kpod_cpu_throttled_periods_total"),
    "network": ("kpod_net_tcp_bytes_sent_total", "kpod_net_tcp_bytes_received_total",
                "kpod_net_tcp_retransmits_total", "kpod_net_tcp_connections_total",
                "kpod_net_tcp_rtt_seconds", "kpod_net_tcp_connection_latency_seconds"),
    "memory": ("kpod_mem_oom_kills_total", "kpod_mem_major_page_faults_total", "kpod_mem_rss_bytes",
               "kpod_mem_working_set_bytes", "kpod_mem_cache_bytes"),
    "syscall": ("kpod_syscall_count_total", "kpod_syscall_errors_total", "kpod_syscall_latency_seconds"),
    "tcpdrop": ("kpod_net_tcp_drops_total",),
    "biolatency": ("kpod_disk_io_latency_seconds",),
    "cachestat": ("kpod_mem_cache_accesses_total", "kpod_mem_cache_additions_total",
                  "kpod_mem_cache_dirtied_total", "kpod_mem_cache_buf_dirtied_total"),
    "hardirqs": ("kpod_irq_hw_latency_seconds", "kpod_irq_hw_count_total"),
    "softirqs": ("kpod_irq_sw_latency_seconds",),
    "execsnoop": ("kpod_proc_execs_total", "kpod_proc_forks_total", "kpod_proc_exits_total"),
    "diskIO": ("kpod_disk_read_bytes_total", "kpod_disk_written_bytes_total",
               "kpod_disk_reads_total", "kpod_disk_writes_total"),
    "ifaceNetwork": tuple(f"kpod_net_iface_{d}_{w}_total" for d in ("rx", "tx")
                          for w in ("bytes", "packets", "errors", "drops")),
    "filesystem": ("kpod_fs_capacity_bytes", "kpod_fs_usage_bytes", "kpod_fs_available_bytes"),
    "memoryCgroup": ("kpod_mem_cgroup_usage_bytes", "kpod_mem_cgroup_peak_bytes",
                     "kpod_mem_cgroup_cache_bytes", "kpod_mem_cgroup_swap_bytes"),
    "l7": ("kpod_l7_requests_total", "kpod_l7_request_duration_seconds"),
}
DISCOVERY_METRICS = ("kpod_container_restarts",)
HISTOGRAMS = frozenset({
    "kpod_cpu_runqueue_latency_seconds", "kpod_net_tcp_rtt_seconds", "kpod_net_tcp_connection_latency_seconds",
    "kpod_syscall_latency_seconds", "kpod_disk_io_latency_seconds", "kpod_irq_hw_latency_seconds",
    "kpod_irq_sw_latency_seconds", "kpod_l7_request_duration_seconds",
})
SELF_METRICS = (
    "kpod_agent_config_generation", "kpod_config_reloads_total", "kpod_collector_attached",
    "kpod_collector_duration_seconds", "kpod_collector_errors_total", "kpod_collector_skipped_total",
    "kpod_collection_cycle_duration_seconds", "kpod_discovery_pods", "kpod_cgroup_read_errors_total",
    "kpod_bpf_program_load_duration_seconds", "kpod_bpf_map_entries", "kpod_bpf_map_capacity",
    "kpod_bpf_map_update_errors_total", "kpod_discovery_errors_total", "kpod_pods_not_counted",
    "kpod_unknown_cgroup_events_total", "kpod_otlp_exports_total",
    # The service topology's store and its per-edge series (network collector).
    "kpod_topology_edges", "kpod_topology_edges_evicted_total", "kpod_topology_edge_bytes_total",
    "kpod_topology_edge_connections_total",
)
# The operator's own /metrics (operator/kpod_operator/metrics.py) and the build info of both binaries.
OPERATOR_METRICS = (
    "kpod_operator_reconciles_total", "kpod_operator_reconcile_duration_seconds", "kpod_operator_api_errors_total",
    "kpod_operator_queue_depth", "kpod_operator_fleet_profiles", "kpod_operator_namespace_overrides",
    "kpod_operator_nodes_applied", "kpod_operator_nodes_desired", "kpod_operator_leader", "kpod_build_info",
)
WORKLOAD_METRICS = frozenset(m for ms in COLLECTOR_METRICS.values() for m in ms) | set(DISCOVERY_METRICS)
ALL_METRICS = WORKLOAD_METRICS | set(SELF_METRICS) | set(OPERATOR_METRICS)

# A kpod metric name not glued to a recording-rule name (level:metric:ops).
_NAME = re.compile(r"(?<![\w:])kpod_[a-z0-9_]+(?![\w:])")


def base_name(sample: str) -> str:
    """kpod_x_seconds_bucket -> kpod_x_seconds for the contract's histograms."""
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and sample[: -len(suffix)] in HISTOGRAMS:
            return sample[: -len(suffix)]
    return sample


def metric_names(promql: str) -> set[str]:
    """Contract-level names of the kpod series a PromQL expression reads."""
    return {base_name(n) for n in _NAME.findall(promql)}
