"""The agent's self metrics: the list dashboards, rules and docs are checked
against is exactly what the exporter writes besides the per-pod series."""
from __future__ import annotations

from kpod_agent.exporter import KpodCollector
from tests.assets import contract
from tests.support.fake_pods import fake_agent

# Written by both binaries; listed with the operator's metrics.
BUILD_INFO = "kpod_build_info"


def exported_families(exporter: KpodCollector) -> set[str]:
    """Family names as they appear in the text format (counters with _total)."""
    return {m.name + ("_total" if m.type == "counter" else "") for m in exporter.collect()}


def test_self_metrics_list_is_what_the_agent_exports() -> None:
    families = exported_families(KpodCollector(fake_agent(3, filled=())))
    own = families - contract.WORKLOAD_METRICS - {BUILD_INFO}
    assert own - set(contract.SELF_METRICS) == set(), "exported but missing from SELF_METRICS"
    assert set(contract.SELF_METRICS) - own == set(), "listed in SELF_METRICS but not exported"
    assert BUILD_INFO in families
