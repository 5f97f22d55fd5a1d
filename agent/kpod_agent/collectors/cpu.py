"""cpu: run-queue latency and context switches (bpf/cpu.c); CPU throttling
from each cgroup's cpu.stat (v1 `throttled_time` ns, v2 `throttled_usec`)."""
from __future__ import annotations

from collections.abc import Iterable

from kpod_agent.collectors.base import (
    BpfCollector,
    as_int,
    CgroupTarget,
    MetricSpec,
    Snapshot,
    hist_from,
    read_flat_keyed,
)


class CpuCollector(BpfCollector):
    name = "cpu"
    source = "cpu.c"
    cgroup_maps = ("runq_latency", "context_switches")
    specs = (
        MetricSpec("kpod_cpu_runqueue_latency_seconds",
                   "Time tasks waited runnable in the run queue before running.",
                   "histogram", unit_seconds=1e-9),
        MetricSpec("kpod_cpu_context_switches_total",
                   "Times a task of the cgroup was switched out of a CPU.", "counter"),
        MetricSpec("kpod_cpu_throttled_seconds_total",
                   "Time the cgroup was throttled by its CPU quota (cpu.stat).", "counter"),
        MetricSpec("kpod_cpu_throttled_periods_total",
                   "CFS periods in which the cgroup was throttled (cpu.stat).", "counter"),
    )

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        snap = Snapshot()
        for key, value in self.read_map("runq_latency"):
            snap.add("kpod_cpu_runqueue_latency_seconds", as_int(key), hist_from(value))
        for key, value in self.read_map("context_switches"):
            snap.add("kpod_cpu_context_switches_total", as_int(key), float(as_int(value)))
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
