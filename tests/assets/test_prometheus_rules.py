"""The PrometheusRule body: valid for Prometheus, every alert unit-tested,
written against the contract's metric names."""

from __future__ import annotations

import pathlib
import shutil

import pytest
import yaml

from tests.assets import contract
from tests.assets.tools import REPO, run, tool

RULES = REPO / "operator/kpod_operator/assets/prometheus-rules.yaml"
RULE_TESTS = sorted((REPO / "rules/tests").glob("*.test.yaml"))


def load_rules(path: pathlib.Path = RULES) -> list[dict]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alerts() -> list[dict]:
    return [r for r in load_rules() if "alert" in r]


def test_promtool_accepts_the_rules():
    out = run(tool("promtool"), "check", "rules", RULES)
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_pass():
    assert RULE_TESTS, "no rules/tests/*.test.yaml"
    out = run(tool("promtool"), "test", "rules", *RULE_TESTS)
    assert "FAILED" not in out.stdout + out.stderr


def test_the_body_is_bare_groups_for_the_operator_to_wrap():
    doc = yaml.safe_load(RULES.read_text())
    assert list(doc) == ["groups"]
    names = [g["name"] for g in doc["groups"]]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("theme, pattern", [
    ("run-queue latency", "kpod_cpu_runqueue_latency_seconds"),
    ("retransmits", "kpod_net_tcp_retransmits"),
    ("drops", "kpod_net_tcp_drops"),
    ("syscall error rate", "kpod_syscall_error"),
    ("OOM", "kpod_mem_oom_kills_total"),
    ("collector errors", "kpod_collector_errors_total"),
    ("map full", "kpod_bpf_map_update_errors_total"),
    ("map nearly full", "kpod_bpf_map_entries"),
    ("collector not attached", "kpod_collector_attached"),
    ("config rejected", "kpod_config_reloads_total"),
    ("agent down", 'up{job="kpod-agent"}'),
])
def test_each_required_theme_has_an_alert(theme, pattern):
    recorded = {r["record"]: r["expr"] for r in load_rules() if "record" in r}
    def expanded(expr: str) -> str:
        return expr + " " + " ".join(e for name, e in recorded.items() if name in expr)
    assert any(pattern in expanded(a["expr"]) for a in alerts()), f"no alert on {theme}"


def test_alerts_carry_severity_summary_and_description():
    for alert in alerts():
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}, alert["alert"]
        assert {"summary", "description"} <= set(alert["annotations"]), alert["alert"]


def test_rules_read_only_contract_metrics():
    used = set().union(*(contract.metric_names(r["expr"]) for r in load_rules()))
    assert used, "no kpod metric found in the rules"
    assert used <= contract.ALL_METRICS, sorted(used - contract.ALL_METRICS)


def test_every_alert_is_expected_to_fire_somewhere():
    tested = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert {a["alert"] for a in alerts()} <= tested


@pytest.mark.parametrize("alert", [a["alert"] for a in alerts()])
def test_unit_tests_catch_an_alert_that_never_fires(alert, tmp_path):
    """The unit tests bite: replace one alert's expression by one that never
    fires and promtool must report a failure."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(1) == 0"
    # Same layout as the repository, since the tests name the rules by relative path.
    rules = tmp_path / RULES.relative_to(REPO)
    rules.parent.mkdir(parents=True)
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))
    tests_dir = tmp_path / "rules/tests"
    shutil.copytree(REPO / "rules/tests", tests_dir)
    out = run(tool("promtool"), "test", "rules", *sorted(tests_dir.glob("*.test.yaml")), check=False)
    assert out.returncode != 0
    assert alert in out.stdout + out.stderr
