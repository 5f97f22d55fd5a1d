"""softirqs: time spent in each softirq vector, node-level (bpf/softirqs.c).
The `vec` label is the vector's name in lower case (``net_rx``), as the
running kernel's tracepoint format names it."""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path

from kpod_agent.collectors.base import MetricSpec, NodeBpfCollector

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


@functools.cache
def _running_kernel_vectors() -> dict[int, str]:
    return read_vector_names()


def vector_name(vec: int) -> str:
    return _running_kernel_vectors().get(vec, str(vec))


class SoftirqsCollector(NodeBpfCollector):
    name = "softirqs"
    source = "softirqs.c"
    specs = (
        MetricSpec("kpod_irq_sw_latency_seconds", "Time spent running softirq handlers, per vector.",
                   "histogram", labels=("vec",), unit_seconds=1e-9, per_pod=False,
                   map="softirq_latency", key=("vec",), decoders={"vec": vector_name}, skip_zero=True),
    )
