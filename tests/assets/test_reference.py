"""docs/reference/ is what the code generates now: the CR, node config, CLI,
endpoints and metric list cannot drift from the models and parsers."""
from __future__ import annotations

from kpod_agent.collectors import REGISTRY
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


def test_readme_links_the_reference() -> None:
    assert "docs/reference/" in (REPO / "README.md").read_text()
