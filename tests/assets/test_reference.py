"""docs/reference/ is what the code generates now: the CR, node config, CLI,
endpoints and metric list cannot drift from the models and parsers."""
from __future__ import annotations

from kpod_agent.collectors import REGISTRY
from tests.assets import contract
from tests.support.reference import REPO, documented_metrics, generator


def test_committed_reference_is_current() -> None:
    gen = generator()
    stale = gen.stale_files()
    assert not stale, (f"docs/reference/ is stale ({', '.join(stale)}): run `{gen.REGENERATE}` "
                       "and commit the result")


def test_metric_list_has_every_collector_spec() -> None:
    documented = documented_metrics()
    for key, cls in REGISTRY.items():
        for spec in cls.specs:
            assert documented.get(spec.name) == spec.kind, f"{key}: {spec.name} ({spec.kind}) not in metrics.md"


def test_asset_checks_know_every_documented_metric() -> None:
    """The names dashboards and rules are checked against are the agent's."""
    documented = documented_metrics()
    agent = contract.WORKLOAD_METRICS | set(contract.SELF_METRICS) | {"kpod_build_info"}
    assert sorted(documented.keys() - agent) == [], "documented, unknown to tests/assets/contract.py"
    assert sorted(agent - documented.keys()) == [], "in tests/assets/contract.py, not documented"
    assert {n for n, kind in documented.items() if kind == "histogram"} == contract.HISTOGRAMS


def test_readme_links_the_reference() -> None:
    assert "docs/reference/" in (REPO / "README.md").read_text()
