"""The reconcile as data (pure): which CR is the fleet, which overrides are
merged, what is applied and deleted, and the outcome of the step results.
No API server: the inputs are CRs and what the operator would have read."""
from __future__ import annotations

import datetime
from typing import Any

from kpod_agent import config as agentconfig
from kpod_agent import contract
from kpod_operator import plan, render

NS = "kpod-system"
AGENTS = "kpod-agents"
NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def _cr(namespace: str, name: str, spec: Any, age: int, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile",
            "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{namespace}-{name}",
                         "creationTimestamp": f"2026-01-01T00:00:{age:02d}Z", "generation": 1, **meta},
            "spec": spec}


def _observed(*crs: dict[str, Any], **read: Any) -> plan.Observed:
    return plan.Observed(list(crs), NOW, **read)


def _refs(p: plan.Plan, verb: str) -> list[str]:
    return [f"{s.obj['metadata'].get('namespace', '')}/{s.ref}" for s in p.steps if s.verb == verb]


def _reports(p: plan.Plan) -> dict[str, str]:
    return {f"{r.cr['metadata']['namespace']}/{r.cr['metadata']['name']}": f"{r.outcome.reason}: {r.outcome.message}"
            for r in p.reports}


def _config(p: plan.Plan) -> agentconfig.AgentConfig:
    cm = next(s.obj for s in p.steps if s.verb == "apply" and s.obj["kind"] == "ConfigMap")
    return agentconfig.parse_config(cm["data"][contract.CONFIG_KEY])


def _ok(p: plan.Plan) -> list[plan.StepResult]:
    return [plan.StepResult(s, "created" if s.verb == "apply" else "deleted") for s in p.steps]


def test_the_oldest_fleet_cr_is_the_fleet_and_the_others_conflict() -> None:
    older = _cr(NS, "b-older", {"profile": "minimal"}, 1)
    newer = _cr(NS, "a-newer", {"profile": "comprehensive"}, 2)
    gone = _cr(NS, "c-oldest-but-deleted", {}, 0, deletionTimestamp="2026-01-01T00:01:00Z")
    elsewhere = _cr("team-a", "metrics", {"profile": "minimal"}, 0)
    p = plan.make(_observed(newer, elsewhere, gone, older), NS)
    assert p.fleet is older
    assert _config(p).profile == "minimal"
    reports = _reports(p)
    assert reports[f"{NS}/a-newer"] == (f"Conflict: {NS}/b-older is the fleet profile; only one is allowed "
                                        f"in {NS}, this one is ignored")
    assert reports["team-a/metrics"].startswith("Merged: ")
    assert f"{NS}/c-oldest-but-deleted" not in reports
    conflict = next(r for r in p.reports if r.cr is newer)
    assert conflict.status["observedGeneration"] == 1
    assert conflict.status["conditions"][0]["lastTransitionTime"] == "2026-01-01T12:00:00Z"


def test_two_overrides_in_one_namespace_the_newer_conflicts_and_the_older_is_rendered() -> None:
    p = plan.make(_observed(_cr(NS, "default", {}, 0),
                            _cr("team-a", "second", {"profile": "comprehensive"}, 2),
                            _cr("team-a", "first", {"profile": "minimal"}, 1)), NS)
    assert _reports(p)["team-a/second"] == "Conflict: namespace team-a already has an override; this one is ignored"
    assert _config(p).namespaceOverrides["team-a"].profile == "minimal"
    assert p.overrides == 1


def test_an_override_for_an_excluded_namespace_is_refused_and_not_rendered() -> None:
    p = plan.make(_observed(_cr(NS, "default", {"namespaces": {"exclude": ["team-x"]}}, 0),
                            _cr("team-x", "metrics", {"profile": "minimal"}, 1)), NS)
    assert _reports(p)["team-x/metrics"].startswith("NamespaceExcluded: the fleet profile's namespaces "
                                                    "filter excludes team-x")
    assert _config(p).namespaceOverrides == {}
    assert p.overrides == 0


def test_without_a_fleet_only_deletes_what_it_made_and_tells_the_overrides() -> None:
    p = plan.make(_observed(_cr("team-a", "metrics", {"profile": "minimal"}, 1),
                            bound_agent_namespace="old-agents"), NS)
    assert p.fleet is None and p.agent_namespace is None
    assert _refs(p, "apply") == []
    assert _refs(p, "delete") == [
        "old-agents/DaemonSet/kpod-agent", "old-agents/Service/kpod-agent",
        "old-agents/NetworkPolicy/kpod-agent", "old-agents/ConfigMap/kpod-agent-config",
        "old-agents/RoleBinding/kpod-agent", "old-agents/Role/kpod-agent",
        "old-agents/ServiceAccount/kpod-agent",
        f"/ClusterRoleBinding/{render.cluster_role_name(NS)}", f"/ClusterRole/{render.cluster_role_name(NS)}"]
    assert _reports(p)["team-a/metrics"] == ("NoFleetProfile: no KpodMetricsProfile in kpod-system: "
                                             "no agents run to apply it")
    assert plan.outcome(p, _ok(p)) == (None, 0)


def test_stale_objects_are_deleted_after_the_applies() -> None:
    """The agents moved namespace and the ServiceMonitor was switched off:
    the old workload and the monitor go, once the new objects are applied."""
    p = plan.make(_observed(_cr(NS, "default", {"agent": {"namespace": "new-agents"},
                                                "serviceMonitor": {"enabled": False}}, 0),
                            bound_agent_namespace=AGENTS, monitoring_served=True), NS)
    applied, deleted = _refs(p, "apply"), _refs(p, "delete")
    assert applied[0] == "new-agents/ConfigMap/kpod-agent-config"
    assert "new-agents/DaemonSet/kpod-agent" in applied and f"{NS}/PrometheusRule/kpod-agent" in applied
    # Last, once every delete succeeded: the binding forgets the old namespace.
    binding = f"/ClusterRoleBinding/{render.cluster_role_name(NS)}"
    assert applied[-1] == binding and p.steps[-1].only_if_all_succeeded
    assert [s.verb for s in p.steps] == ["apply"] * (len(applied) - 1) + ["delete"] * len(deleted) + ["apply"]
    first = next(s.obj for s in p.steps if s.obj["kind"] == "ClusterRoleBinding")
    assert render.pending_namespaces(first, render.PENDING_AGENTS_ANNOTATION) == (AGENTS,)
    assert render.pending_namespaces(p.steps[-1].obj, render.PENDING_AGENTS_ANNOTATION) == ()
    assert f"{AGENTS}/DaemonSet/kpod-agent" in deleted and f"{AGENTS}/ConfigMap/kpod-agent-config" in deleted
    assert f"{NS}/ServiceMonitor/kpod-agent" in deleted and f"{NS}/ServiceMonitor/kpod-operator" in deleted
    assert f"{NS}/PrometheusRule/kpod-agent" not in deleted
    # The NetworkPolicy is off by default: one of ours would go.
    assert [ref for ref in deleted if ref.startswith("new-agents/")] == ["new-agents/NetworkPolicy/kpod-agent"]
    assert p.agent_namespace == "new-agents"


def test_monitoring_not_served_is_neither_applied_nor_deleted_and_reported() -> None:
    p = plan.make(_observed(_cr(NS, "default", {}, 0)), NS)
    assert not any("monitoring.coreos.com" in s.obj["apiVersion"] for s in p.steps)
    outcome, generation = plan.outcome(p, _ok(p))
    assert outcome is not None and (outcome.ok, outcome.reason) == (True, "ServiceMonitorCRDNotInstalled")
    assert generation == 1


def test_an_invalid_spec_plans_nothing_and_keeps_the_generation() -> None:
    fleet = _cr(NS, "default", {"syscalls": ["no_such_syscall"]}, 0)
    fleet["status"] = {"configGeneration": 4}
    p = plan.make(_observed(fleet, _cr("team-a", "metrics", {}, 1)), NS)
    assert p.steps == [] and p.agent_namespace is None
    outcome, generation = plan.outcome(p, [])
    assert outcome is not None and outcome.reason == "InvalidSpec" and "no_such_syscall" in outcome.message
    assert generation == 4
    assert "team-a/metrics" not in _reports(p)  # overrides are not judged against a spec that failed


def test_the_generation_moves_only_when_the_content_changes() -> None:
    fleet = _cr(NS, "default", {"profile": "minimal"}, 0)
    first = plan.make(_observed(fleet), NS)
    assert first.generation == 1
    running = first.steps[0].obj["data"][contract.CONFIG_KEY]
    fleet["status"] = {"configGeneration": 1}
    assert plan.make(_observed(fleet, running_config=running), NS).generation == 1
    fleet["spec"] = {"profile": "comprehensive"}
    assert plan.make(_observed(fleet, running_config=running), NS).generation == 2


def test_outcome_of_failed_steps_names_them_and_holds_the_generation_if_the_config_failed() -> None:
    fleet = _cr(NS, "default", {}, 0)
    fleet["status"] = {"configGeneration": 3}
    p = plan.make(_observed(fleet, monitoring_served=True), NS)
    assert p.generation == 4
    results = _ok(p)
    ds = next(i for i, r in enumerate(results) if r.step.obj["kind"] == "DaemonSet")
    results[ds] = plan.StepResult(results[ds].step, "failed", "HTTP 500: injected")
    outcome, generation = plan.outcome(p, results)
    assert outcome is not None
    assert (outcome.ok, outcome.reason, outcome.message) == (
        False, "ApplyFailed", "DaemonSet/kpod-agent: HTTP 500: injected")
    assert generation == 4  # the ConfigMap was written: the agents get generation 4
    results[0] = plan.StepResult(results[0].step, "failed", "HTTP 409: conflict")
    outcome, generation = plan.outcome(p, results)
    assert outcome is not None and outcome.message.startswith("ConfigMap/kpod-agent-config: HTTP 409")
    assert generation == 3
    outcome, generation = plan.outcome(p, _ok(p))
    assert outcome is not None and (outcome.reason, outcome.message) == ("Reconciled", "config generation 4")


def test_cluster_scoped_objects_are_owned_by_the_crd_when_known() -> None:
    p = plan.make(_observed(_cr(NS, "default", {}, 0), crd_uid="crd-uid"), NS)
    cluster = [s.obj for s in p.steps if s.verb == "apply" and "namespace" not in s.obj["metadata"]]
    assert {o["kind"] for o in cluster} == {"ClusterRole", "ClusterRoleBinding"}
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "crd-uid" for o in cluster)
