"""Reads an in-process agent the way Prometheus does, through its registry."""
from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from kpod_agent.agent import Agent
from kpod_agent.exporter import KpodCollector


class Scraper:
    """Reads the agent the way Prometheus does, through its registry."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(KpodCollector(agent))

    def sync(self) -> None:
        """Discovery and a collection cycle now, instead of on their timers."""
        if self.agent.discovery is not None:
            self.agent.on_index(self.agent.discovery.refresh())
        self.agent.collect_due(force=True)

    def value(self, name: str, **labels: str) -> float:
        """The one sample of `name` whose labels include `labels` (0 if none)."""
        found = [
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) <= 1, f"{len(found)} samples of {name} match {labels}"
        return found[0] if found else 0.0

    def pod_value(self, name: str, pod: Any, container: str = "app", **labels: str) -> float:
        return self.value(name, namespace=pod.namespace, pod=pod.name, container=container, node="node-1", **labels)

    def series(self, name: str) -> list[dict[str, str]]:
        found = []
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == name:
                    found.append(dict(sample.labels))
        return found
