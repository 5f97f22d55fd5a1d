"""cpu: run-queue latency and context switches (bpf/cpu.c); CPU throttling
from each cgroup's cpu.stat (v1 `throttled_time` ns, v2 `throttled_usec`)."""
from __future__ import annotations

from collections.abc import Iterable

from kpod_agent.collectors.base import BpfCollector, CgroupTarget, MetricSpec, Snapshot, read_flat_keyed


class CpuCollector(BpfCollector):
    name = "cpu"
    source = "cpu.c"
    specs = (
        MetricSpec("kpod_cpu_runqueue_latency_seconds",
                   "Time tasks waited runnable in the run queue before running.",
                   "histogram", unit_seconds=1e-9, map="runq_latency"),
        MetricSpec("kpod_cpu_context_switches_total",
                   "Times a task of the cgroup was switched out of a CPU.", "counter", map="context_switches"),
        MetricSpec("kpod_cpu_throttled_seconds_total",
                   "Time the cgroup was throttled by its CPU quota (cpu.stat).", "counter"),
        MetricSpec("kpod_cpu_throttled_periods_total",
                   "CFS periods in which the cgroup was throttled (cpu.stat).", "counter"),
    )

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        # The maps are the specs'; throttling is in cgroup files, no map.
        snap = super().collect(targets)
        for target in targets:
            try:
                stat = read_flat_keyed(self.ctx.layout.controller_dir(target.relpath, "cpu") / "cpu.stat")
            except OSError:
                self.cgroup_read_errors += 1
                continue
            if "throttled_usec" in stat:
                throttled = stat["throttled_usec"] / 1e6
            else:
                throttled = stat.get("throttled_time", 0) / 1e9
            snap.add("kpod_cpu_throttled_seconds_total", target.cgroup_id, throttled)
            snap.add("kpod_cpu_throttled_periods_total", target.cgroup_id, float(stat.get("nr_throttled", 0)))
        return snap
