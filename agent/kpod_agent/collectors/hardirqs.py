"""hardirqs: hardware interrupt handler time and count per IRQ, node-level
(bpf/hardirqs.c). The `irq` label is the IRQ's action name as
/proc/interrupts shows it (``virtio1-req.0``), or its number when it has none;
IRQs sharing a name are summed."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from kpod_agent.collectors.base import BpfCollector, CgroupTarget, MetricSpec, Snapshot, as_int, hist_from

SYS_IRQ = Path("/sys/kernel/irq")


def irq_name(number: int, sys_irq: Path = SYS_IRQ) -> str:
    try:
        actions = (sys_irq / str(number) / "actions").read_text().strip()
    except OSError:
        actions = ""
    return actions or str(number)


class HardirqsCollector(BpfCollector):
    name = "hardirqs"
    source = "hardirqs.c"
    error_maps = ("irq_latency",)
    specs = (
        MetricSpec("kpod_irq_hw_latency_seconds", "Time spent in hardware interrupt handlers.",
                   "histogram", labels=("irq",), unit_seconds=1e-9, per_pod=False),
        MetricSpec("kpod_irq_hw_count_total", "Hardware interrupt handler runs.", "counter",
                   labels=("irq",), per_pod=False),
    )

    def set_filter(self, allowed: Mapping[int, int] | None) -> None:
        """Node-level: interrupts belong to devices, not pods."""

    def forget(self, cgroup_ids: set[int]) -> None:
        pass

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        snap = Snapshot()
        for key, value in self.read_map("irq_latency"):
            hist = hist_from(value)
            label = (irq_name(as_int(key)),)
            snap.add("kpod_irq_hw_latency_seconds", 0, hist, label)
            snap.add("kpod_irq_hw_count_total", 0, float(sum(hist.slots)), label)
        return snap
