"""The Grafana dashboard: generated, one row per collector, valid PromQL over
the contract's metric names, a sound layout."""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import pytest
import yaml

from kpod_agent import config
from tests.assets import contract
from tests.assets.tools import REPO, run, tool

DASHBOARD = REPO / "dashboards/kpod-metrics.json"


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in load()["panels"] if p["type"] != "row"]


def exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def test_committed_json_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("dashboard_generate", REPO / "dashboards/generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    assert DASHBOARD.read_text() == module.render(), "run: python dashboards/generate.py"


def test_the_operator_ships_the_committed_dashboard_byte_for_byte():
    """The copy the operator renders for the Grafana sidecar (written by the generator too)."""
    shipped = REPO / "operator/kpod_operator/assets/kpod-metrics.json"
    assert shipped.read_bytes() == DASHBOARD.read_bytes(), "run: python dashboards/generate.py"


def test_every_collector_has_a_row():
    titles = [p["title"] for p in load()["panels"] if p["type"] == "row"]
    keys = {t.rsplit(" · ", 1)[1] for t in titles if " · " in t}
    assert set(config.COLLECTOR_NAMES) <= keys, sorted(set(config.COLLECTOR_NAMES) - keys)


def test_every_contract_series_is_shown_and_nothing_else():
    used = set().union(*(contract.metric_names(e) for e in exprs()))
    assert used <= contract.ALL_METRICS, sorted(used - contract.ALL_METRICS)
    assert contract.WORKLOAD_METRICS <= used, sorted(contract.WORKLOAD_METRICS - used)


def test_every_collector_row_shows_its_own_metrics():
    rows: dict[str, set[str]] = {}
    current = None
    for p in load()["panels"]:
        if p["type"] == "row":
            current = p["title"].rsplit(" · ", 1)[1] if " · " in p["title"] else None
        elif current:
            rows.setdefault(current, set()).update(*(contract.metric_names(t["expr"]) for t in p["targets"]))
    for collector, metrics in contract.COLLECTOR_METRICS.items():
        assert set(metrics) <= rows.get(collector, set()), collector


def promql(expr: str) -> str:
    """Grafana variables -> values Prometheus accepts."""
    return expr.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$pod", ".*") \
        .replace("$node", ".*")


def test_every_query_is_valid_promql(tmp_path):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}:expr", "expr": promql(e)} for i, e in enumerate(exprs())
    ]}]}
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    run(tool("promtool"), "check", "rules", path)


def test_promql_check_catches_a_broken_query(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"record": "dashboard:broken:expr", "expr": promql(exprs()[0]).replace("rate(", "rate((", 1)}]}]}))
    assert run(tool("promtool"), "check", "rules", path, check=False).returncode != 0


def test_variables_used_are_defined():
    names = {v["name"] for v in load()["templating"]["list"]}
    used = set(re.findall(r"\$(\w+)", json.dumps(load()["panels"]))) - {"__rate_interval"}
    assert used <= names, sorted(used - names)
    for query in (v.get("definition", "") for v in load()["templating"]["list"]):
        assert contract.metric_names(query) <= contract.ALL_METRICS


def test_per_pod_queries_filter_by_the_variables():
    for e in exprs():
        names = contract.metric_names(e)
        if names and names <= contract.WORKLOAD_METRICS:
            assert 'node=~"$node"' in e, e
            if not names & {"kpod_irq_hw_latency_seconds", "kpod_irq_hw_count_total", "kpod_irq_sw_latency_seconds"}:
                assert 'namespace=~"$namespace"' in e and 'pod=~"$pod"' in e, e


def test_layout_has_unique_ids_and_no_overlap():
    all_panels = load()["panels"]
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in all_panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps at {(x, y)}"
                cells.add((x, y))


@pytest.mark.parametrize("panel", panels(), ids=lambda p: p["title"])
def test_panels_have_targets_and_a_unit(panel):
    assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
    assert panel["fieldConfig"]["defaults"]["unit"]
