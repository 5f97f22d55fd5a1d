"""biolatency: block I/O latency from issue to completion, per pod, charged
to the cgroup that submitted the I/O (bpf/biolatency.c)."""
from __future__ import annotations

from collections.abc import Iterable

from kpod_agent.collectors.base import BpfCollector, CgroupTarget, MetricSpec, Snapshot, as_int, hist_from


class BiolatencyCollector(BpfCollector):
    name = "biolatency"
    source = "biolatency.c"
    cgroup_maps = ("io_latency",)
    specs = (
        MetricSpec("kpod_disk_io_latency_seconds",
                   "Block I/O requests of the cgroup, from issue to the device until completion.",
                   "histogram", unit_seconds=1e-9),
    )

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        snap = Snapshot()
        for key, value in self.read_map("io_latency"):
            snap.add("kpod_disk_io_latency_seconds", as_int(key), hist_from(value))
        return snap
