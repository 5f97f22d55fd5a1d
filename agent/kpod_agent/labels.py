"""A label put on every sample of families already built.

``clusterName`` from the node config becomes a ``cluster`` label on every
series (per-pod, node-level and self metrics alike), so several clusters can
share one Prometheus without relabelling. The exporter writes it into the
per-pod series itself and wraps the library-rendered families with this.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector


class ConstantLabel(Collector):
    """Wraps a collector: every sample of its families gets ``name=value()``
    (nothing added while ``value()`` is empty)."""

    def __init__(self, inner: Collector, name: str, value: Callable[[], str]) -> None:
        self.inner = inner
        self.name = name
        self.value = value

    def collect(self) -> Iterator[Metric]:
        value = self.value()
        for family in self.inner.collect():
            if value:
                family.samples = [s._replace(labels={self.name: value, **s.labels}) for s in family.samples]
            yield family


def cluster_of(agent: object) -> str:
    config = getattr(agent, "config", None)
    return str(getattr(config, "clusterName", "") or "")
