"""softirqs: time spent in each softirq vector, node-level (bpf/softirqs.c).
The `vec` label is the vector's name in lower case (``net_rx``), as the
running kernel's tracepoint format names it."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from kpod_agent.collectors.base import CollectorContext, BpfCollector, CgroupTarget, MetricSpec, Snapshot, as_int, hist_from

TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
# include/linux/interrupt.h, for kernels whose format file cannot be read.
DEFAULT_VECTORS = ("hi", "timer", "net_tx", "net_rx", "block", "irq_poll", "tasklet", "sched", "hrtimer", "rcu")
_SYMBOL = re.compile(r"\{\s*(\d+)\s*,\s*\"(\w+)\"\s*\}")


def vector_names(format_text: str) -> dict[int, str]:
    """irq:softirq_entry format file -> vector number -> lower-case name."""
    return {int(n): name.lower() for n, name in _SYMBOL.findall(format_text)}


def read_vector_names(tracefs_roots: Iterable[str] = TRACEFS_ROOTS) -> dict[int, str]:
    for root in tracefs_roots:
        try:
            names = vector_names((Path(root) / "events/irq/softirq_entry/format").read_text())
        except OSError:
            continue
        if names:
            return names
    return dict(enumerate(DEFAULT_VECTORS))


class SoftirqsCollector(BpfCollector):
    name = "softirqs"
    source = "softirqs.c"
    specs = (
        MetricSpec("kpod_irq_sw_latency_seconds", "Time spent running softirq handlers, per vector.",
                   "histogram", labels=("vec",), unit_seconds=1e-9, per_pod=False),
    )

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self.vectors = read_vector_names()

    def set_filter(self, allowed: Mapping[int, int] | None) -> None:
        """Node-level: a softirq serves many pods at once."""

    def forget(self, cgroup_ids: set[int]) -> None:
        pass

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        snap = Snapshot()
        for key, value in self.read_map("softirq_latency"):
            hist = hist_from(value)
            if not any(hist.slots):
                continue
            vec = as_int(key)
            snap.add("kpod_irq_sw_latency_seconds", 0, hist, (self.vectors.get(vec, str(vec)),))
        return snap
