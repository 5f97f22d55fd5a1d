"""hardirqs: hardware interrupt handler time and count per IRQ, node-level
(bpf/hardirqs.c). The `irq` label is the IRQ's action name as
/proc/interrupts shows it (``virtio1-req.0``), or its number when it has none;
IRQs sharing a name are summed."""
from __future__ import annotations

from pathlib import Path

from kpod_agent.collectors.base import OBSERVATIONS, MetricSpec, NodeBpfCollector

SYS_IRQ = Path("/sys/kernel/irq")


def irq_name(number: int, sys_irq: Path = SYS_IRQ) -> str:
    try:
        actions = (sys_irq / str(number) / "actions").read_text().strip()
    except OSError:
        actions = ""
    return actions or str(number)


class HardirqsCollector(NodeBpfCollector):
    name = "hardirqs"
    source = "hardirqs.c"
    error_maps = ("irq_latency",)
    specs = (
        MetricSpec("kpod_irq_hw_latency_seconds", "Time spent in hardware interrupt handlers.",
                   "histogram", labels=("irq",), unit_seconds=1e-9, per_pod=False,
                   map="irq_latency", key=("irq",), decoders={"irq": irq_name}),
        MetricSpec("kpod_irq_hw_count_total", "Hardware interrupt handler runs.", "counter",
                   labels=("irq",), per_pod=False,
                   map="irq_latency", key=("irq",), value=OBSERVATIONS, decoders={"irq": irq_name}),
    )
