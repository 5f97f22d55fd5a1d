"""biolatency: block I/O latency from issue to completion, per pod, charged
to the cgroup that submitted the I/O (bpf/biolatency.c)."""
from __future__ import annotations

from kpod_agent.collectors.base import BpfCollector, MetricSpec


class BiolatencyCollector(BpfCollector):
    name = "biolatency"
    source = "biolatency.c"
    specs = (
        MetricSpec("kpod_disk_io_latency_seconds",
                   "Block I/O requests of the cgroup, from issue to the device until completion.",
                   "histogram", unit_seconds=1e-9, map="io_latency"),
    )
