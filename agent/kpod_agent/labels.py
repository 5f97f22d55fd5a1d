"""Labels put on every series the agent exposes, after the families are built.

``clusterName`` from the node config becomes a ``cluster`` label on every
series (per-pod, node-level and self metrics alike), so several clusters can
share one Prometheus without relabelling. Applied to the finished output of
both exposition paths: the text written directly, and the families that
prometheus_client encodes (OpenMetrics), so the exporter stays unaware of it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def add_label_to_text(text: bytes, name: str, value: str) -> bytes:
    """``name="value"`` first on every sample line of Prometheus text format.

    A metric name never contains '{' or ' ', so the label set starts at the
    first of them; label values after it are left untouched."""
    if not value:
        return text
    pair = f'{name}="{_escape(value)}"'.encode()
    out = []
    for line in text.split(b"\n"):
        if not line or line.startswith(b"#"):
            out.append(line)
            continue
        brace, space = line.find(b"{"), line.find(b" ")
        if brace != -1 and (space == -1 or brace < space):
            rest = line[brace + 1:]
            out.append(line[:brace + 1] + pair + (b"," if not rest.startswith(b"}") else b"") + rest)
        else:
            out.append(line[:space] + b"{" + pair + b"}" + line[space:])
    return b"\n".join(out)


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
