"""Override resolution (pure): each override's verdict is its own; the
fleet's budget and the agents' shared limits refuse the newest, never the fleet."""
from __future__ import annotations

from typing import Any

from kpod_agent import config as agentconfig
from kpod_operator import events, model, render, status, tenancy

NS = "kpod-system"
NAMES = sorted(agentconfig.KNOWN_SYSCALLS & set(agentconfig.syscall_numbers("x86_64")))


def _cr(namespace: str, spec: Any, age: int, name: str = "metrics") -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "uid": f"uid-{namespace}-{name}",
                         "creationTimestamp": f"2026-01-01T00:{age // 60:02d}:{age % 60:02d}Z", "generation": 1},
            "spec": spec}


def _verdicts(crs: list[dict[str, Any]], fleet: dict[str, Any] | None = None,
              running: dict[str, agentconfig.NamespaceOverride] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    overrides, verdicts = tenancy.resolve(crs, NS, model.parse_fleet(fleet or {}), running)
    return overrides, {v.cr["metadata"]["namespace"]: f"{v.outcome.reason}: {v.outcome.message}" for v in verdicts}


def test_within_budget_is_merged() -> None:
    overrides, verdicts = _verdicts([_cr("team-a", {"profile": "comprehensive", "syscalls": ["futex"]}, 1)])
    assert verdicts["team-a"].startswith("Merged")
    assert overrides["team-a"].syscalls == ["futex"]


def test_each_budget_limit_is_named_on_the_override() -> None:
    fleet = {"overridePolicy": {"allowedProfiles": ["minimal", "standard"], "maxSyscalls": 3,
                                "minInterval": "10s", "allowLatency": False}}
    crs = [
        _cr("profile", {"profile": "comprehensive"}, 1),
        _cr("collector", {"collectors": {"hardirqs": {"enabled": True}}}, 2),
        _cr("syscalls", {"syscalls": NAMES[:4]}, 3),
        _cr("interval", {"collectors": {"cpu": {"interval": "1s"}}}, 4),
        _cr("latency", {"collectors": {"syscall": {"latency": True}}}, 5),
        _cr("fine", {"profile": "standard", "syscalls": NAMES[:3], "collectors": {"cpu": {"interval": "10s"}}}, 6),
    ]
    overrides, verdicts = _verdicts(crs, fleet)
    assert "overridePolicy.allowedProfiles [minimal, standard]" in verdicts["profile"]
    assert "collectors hardirqs: beyond overridePolicy.allowedProfiles" in verdicts["collector"]
    assert "syscalls: 4 listed, overridePolicy.maxSyscalls is 3" in verdicts["syscalls"]
    assert "collectors.cpu.interval: 1s is below overridePolicy.minInterval 10s" in verdicts["interval"]
    assert "collectors.syscall.latency: overridePolicy.allowLatency is false" in verdicts["latency"]
    assert all(v.startswith("OverBudget") for ns, v in verdicts.items() if ns != "fine")
    assert set(overrides) == {"fine"}


def test_collectors_the_fleet_runs_anyway_are_not_charged() -> None:
    # The fleet is comprehensive: an override inheriting it adds nothing.
    fleet = {"profile": "comprehensive", "overridePolicy": {"allowedProfiles": ["minimal"]}}
    overrides, verdicts = _verdicts([_cr("team-a", {"syscalls": ["futex"]}, 1)], fleet)
    assert verdicts["team-a"].startswith("Merged")


def test_excluded_namespaces_are_not_rendered_and_say_so() -> None:
    crs = [_cr("kube-system", {"profile": "comprehensive", "syscalls": NAMES[:64]}, 1),
           _cr("team-x", {"profile": "minimal"}, 2)]
    overrides, verdicts = _verdicts(crs, {"namespaces": {"include": ["team-a"]}})
    assert overrides == {}
    assert verdicts["kube-system"].startswith("NamespaceExcluded: the fleet profile's namespaces filter excludes")
    assert verdicts["team-x"].startswith("NamespaceExcluded: the fleet profile's namespaces filter does not include")


def test_past_the_allowlist_limit_the_newest_overrides_are_refused() -> None:
    limit = agentconfig.MAX_SYSCALL_POLICIES
    # Created newest first in the list: the order that counts is creationTimestamp.
    crs = [_cr(f"team-{i:03d}", {"syscalls": [NAMES[i]]}, i) for i in reversed(range(limit + 2))]
    crs.append(_cr("shared", {"syscalls": [NAMES[0]]}, 500))  # an allowlist already counted: no new slot
    overrides, verdicts = _verdicts(crs, {"syscalls": ["read"]})
    refused = sorted(ns for ns, v in verdicts.items() if v.startswith("OverBudget"))
    assert refused == [f"team-{limit - 1:03d}", f"team-{limit:03d}", f"team-{limit + 1:03d}"]
    assert "at most 64 distinct syscall allowlists" in verdicts[refused[0]]
    assert "shared" in overrides
    # ... and what is rendered is a node config the agents accept.
    render.render_agent_config(model.parse_fleet({"syscalls": ["read"]}), overrides, 1)


def test_a_refused_edit_keeps_the_running_version_when_it_still_fits() -> None:
    running = {"team-a": agentconfig.NamespaceOverride(profile="minimal"),
               "team-b": agentconfig.NamespaceOverride(profile="comprehensive")}
    crs = [_cr("team-a", {"profile": "nonsense"}, 1), _cr("team-b", {"profile": "comprehensive"}, 2)]
    fleet = {"overridePolicy": {"allowedProfiles": ["minimal", "standard"]}}
    overrides, verdicts = _verdicts(crs, fleet, running)
    assert verdicts["team-a"].startswith("InvalidSpec") and "last accepted version stays" in verdicts["team-a"]
    assert overrides["team-a"].profile == "minimal"
    # The fleet tightened its budget: the old version is beyond it too, so it goes.
    assert verdicts["team-b"].startswith("OverBudget") and "stays" not in verdicts["team-b"]
    assert "team-b" not in overrides


def test_second_override_in_a_namespace_conflicts_and_no_fleet_says_so() -> None:
    crs = [_cr("team-a", {"profile": "minimal"}, 2, "b"), _cr("team-a", {"profile": "standard"}, 1, "a")]
    overrides, verdicts = tenancy.resolve(crs, NS, model.parse_fleet({}))
    assert [(v.cr["metadata"]["name"], v.outcome.reason) for v in verdicts] == [("a", "Merged"), ("b", "Conflict")]
    _, verdicts = tenancy.resolve(crs[:1], NS, None)
    assert verdicts[0].outcome.reason == "NoFleetProfile"


def test_events_only_for_new_refusals() -> None:
    bad = status.ReconcileOutcome(False, "OverBudget", "syscalls: 9 listed")
    assert events.should_post(None, bad)
    assert not events.should_post(bad, bad)
    assert events.should_post(status.ReconcileOutcome(False, "OverBudget", "syscalls: 8 listed"), bad)
    assert not events.should_post(None, status.ReconcileOutcome(True, "Merged", "applies"))
    for reason in ("InvalidSpec", "Conflict", "ApplyFailed", "NamespaceExcluded"):
        assert events.should_post(None, status.ReconcileOutcome(False, reason, "x"))


def test_rendered_event_is_a_valid_core_v1_event() -> None:
    import kubernetes_validate
    cr = _cr("team-a", {}, 1)
    cr["metadata"]["resourceVersion"] = "7"
    event = events.render_event(cr, status.ReconcileOutcome(False, "InvalidSpec", "x" * 5000),
                                "2026-01-01T00:00:00Z", "op-1")
    event["metadata"]["name"] = "metrics.abc"  # the API server fills generateName
    kubernetes_validate.validate(event, "1.30.0", strict=True)
    assert event["involvedObject"]["namespace"] == event["metadata"]["namespace"] == "team-a"
    assert len(event["message"]) <= events.MAX_MESSAGE
