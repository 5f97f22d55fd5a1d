"""kopf running the operator against the emulated API server, end to end."""
from __future__ import annotations

import json
from typing import Any

from kpod_agent import config as agentconfig
from tests.support.kubeconfig import write_kubeconfig
from tests.support.operator import AGENTS, NS, Harness
from tests.support.waiting import wait_for

DS_PATH = f"/apis/apps/v1/namespaces/{AGENTS}/daemonsets/kpod-agent"
AGENT_PATHS = (f"/api/v1/namespaces/{AGENTS}/configmaps/kpod-agent-config", DS_PATH,
               f"/api/v1/namespaces/{AGENTS}/services/kpod-agent",
               f"/api/v1/namespaces/{AGENTS}/serviceaccounts/kpod-agent",
               f"/apis/rbac.authorization.k8s.io/v1/namespaces/{AGENTS}/roles/kpod-agent",
               f"/apis/rbac.authorization.k8s.io/v1/namespaces/{AGENTS}/rolebindings/kpod-agent")


def _config(h: Harness) -> agentconfig.AgentConfig:
    cm = h.configmap()
    assert cm is not None
    return agentconfig.parse_config(cm["data"]["agent.yaml"])


def _reason(h: Harness, name: str, ctype: str, namespace: str = NS) -> str | None:
    cond = h.condition(namespace, name, ctype)
    return None if cond is None else f"{cond['status']}/{cond['reason']}"


def _fleet_ready(h: Harness) -> dict[str, Any]:
    """Apply the sample-like fleet CR and wait for its first reconcile."""
    h.apply_cr(NS, "default", {"profile": "standard", "syscalls": ["read", "write"]})
    wait_for(lambda: h.configmap() and h.daemonset() and
             (h.cr(NS, "default").get("status") or {}).get("configGeneration") == 1,
             what="first reconcile")
    return h.cr(NS, "default")


def _reconciles(running: Any) -> float:
    return running.metrics.registry.get_sample_value("kpod_operator_reconcile_duration_seconds_count") or 0.0


def _write_ds_status(h: Harness, **counts: int) -> None:
    ds = h.daemonset()
    assert ds is not None
    status = {"observedGeneration": ds["metadata"]["generation"], **counts}
    h.kube.merge_patch(f"{DS_PATH}/status", {"status": status})


def test_apply_creates_configmap_daemonset_service_rbac_in_the_agents_namespace(
        harness: Harness, operator: Any) -> None:
    cr = _fleet_ready(harness)
    config = _config(harness)
    assert config.generation == 1
    assert config.discovery.mode == "informer"
    assert config.syscalls == ["read", "write"]
    for path in AGENT_PATHS:
        obj = harness.get(path)
        assert obj is not None, path
        # Owner references cannot cross namespaces: the operator deletes these itself.
        assert "ownerReferences" not in obj["metadata"], path
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kpod-operator"
        assert harness.get(path.replace(f"/namespaces/{AGENTS}/", f"/namespaces/{NS}/")) is None, path
    assert harness.get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/kpod-agent-{NS}") is not None
    # No finalizer: deleting a CR never waits for the operator (children go by owner references).
    assert not harness.cr(NS, "default")["metadata"].get("finalizers")
    status = cr["status"]
    assert status["observedGeneration"] == cr["metadata"]["generation"]
    assert status["configGeneration"] == 1
    # No Prometheus Operator here: said so, and nothing of it created.
    assert _reason(harness, "default", "Reconciled") == "True/ServiceMonitorCRDNotInstalled"
    assert harness.cluster.objects("servicemonitors") == []


def test_node_config_edit_raises_generation_without_touching_the_pod_template(
        harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    ds_before = harness.daemonset()
    assert ds_before is not None
    harness.apply_cr(NS, "default", {"syscalls": ["read", "write", "close"],
                                     "collectors": {"syscall": {"enabled": True, "interval": "30s"}}})
    wait_for(lambda: _config(harness).generation == 2, what="generation 2")
    config = _config(harness)
    assert config.syscalls == ["read", "write", "close"]
    assert "syscall" in config.node_collectors()
    wait_for(lambda: harness.cr(NS, "default")["status"]["configGeneration"] == 2, what="status gen 2")
    ds_after = harness.daemonset()
    assert ds_after is not None
    assert ds_after["spec"]["template"] == ds_before["spec"]["template"]
    assert ds_after["metadata"]["generation"] == ds_before["metadata"]["generation"]
    assert ds_after["metadata"]["resourceVersion"] == ds_before["metadata"]["resourceVersion"]


def test_image_edit_rolls_the_template_and_keeps_the_node_config(harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    ds_before = harness.daemonset()
    assert ds_before is not None
    harness.apply_cr(NS, "default", {"agent": {"image": "registry.example/kpod-agent:1.2",
                                               "updateStrategy": {"maxUnavailable": "20%"}}})
    wait_for(lambda: harness.daemonset()["spec"]["template"]["spec"]["containers"][0]["image"]
             == "registry.example/kpod-agent:1.2", what="new image")
    ds_after = harness.daemonset()
    assert ds_after["metadata"]["generation"] == ds_before["metadata"]["generation"] + 1
    assert ds_after["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "20%"
    assert _config(harness).generation == 1


def test_namespace_override_is_merged_and_removed(harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    harness.apply_cr("team-a", "metrics", {
        "profile": "comprehensive", "syscalls": ["futex"],
        "podSelector": {"matchLabels": {"app": "web"}}})
    wait_for(lambda: "team-a" in _config(harness).namespaceOverrides, what="override merged")
    config = _config(harness)
    override = config.namespaceOverrides["team-a"]
    assert override.profile == "comprehensive"
    assert config.syscalls_for("team-a") == ["futex"]
    assert config.pod_selector_for("team-a").matchLabels == {"app": "web"}
    assert config.generation == 2
    wait_for(lambda: _reason(harness, "metrics", "Reconciled", "team-a") == "True/Merged",
             what="override status")
    harness.kube.request("DELETE", "/apis/kpod.io/v1alpha1/namespaces/team-a/kpodmetricsprofiles/metrics")
    wait_for(lambda: "team-a" not in _config(harness).namespaceOverrides, what="override removed")
    assert _config(harness).generation == 3


def test_second_fleet_profile_is_a_conflict_and_ignored(harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    harness.apply_cr(NS, "second", {"profile": "minimal", "agent": {"image": "other:1"}})
    wait_for(lambda: _reason(harness, "second", "Reconciled") == "False/Conflict", what="conflict")
    assert "default" in harness.condition(NS, "second", "Reconciled")["message"]
    harness.resync(3)
    assert _config(harness).profile == "standard"
    assert harness.daemonset()["spec"]["template"]["spec"]["containers"][0]["image"] == "kpod-agent:dev"
    assert _reason(harness, "default", "Reconciled").startswith("True/")


def test_invalid_override_gets_a_condition_and_the_rest_stays(harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    harness.apply_cr("team-b", "ok", {"profile": "minimal"})
    wait_for(lambda: "team-b" in _config(harness).namespaceOverrides, what="valid override")
    generation = _config(harness).generation
    harness.apply_cr("team-c", "bad", {"profile": "minimal", "agent": {"image": "evil:1"}})
    wait_for(lambda: _reason(harness, "bad", "Reconciled", "team-c") == "False/InvalidSpec",
             what="invalid override condition")
    message = harness.condition("team-c", "bad", "Reconciled")["message"]
    assert "agent" in message and "fleet profile" in message
    harness.resync(3)
    config = _config(harness)
    assert set(config.namespaceOverrides) == {"team-b"}
    assert config.generation == generation
    assert _reason(harness, "default", "Reconciled").startswith("True/")


def test_invalid_fleet_spec_keeps_the_last_good_config(harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    before = harness.configmap()["data"]["agent.yaml"]
    harness.apply_cr(NS, "default", {"syscalls": ["read", "no_such_syscall"]})
    wait_for(lambda: _reason(harness, "default", "Reconciled") == "False/InvalidSpec", what="invalid spec")
    assert "no_such_syscall" in harness.condition(NS, "default", "Reconciled")["message"]
    assert _reason(harness, "default", "Degraded") == "True/InvalidSpec"
    assert harness.configmap()["data"]["agent.yaml"] == before
    harness.apply_cr(NS, "default", {"syscalls": ["read"]})
    wait_for(lambda: _reason(harness, "default", "Reconciled", NS).startswith("True/"), what="recovered")
    assert _config(harness).syscalls == ["read"]


def test_daemonset_status_drives_the_conditions(harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    _write_ds_status(harness, desiredNumberScheduled=3, updatedNumberScheduled=3,
                     numberAvailable=3, numberReady=3)
    wait_for(lambda: _reason(harness, "default", "Available") == "True/AllAvailable", what="available")
    assert _reason(harness, "default", "Progressing") == "False/RolloutComplete"
    assert _reason(harness, "default", "Degraded") == "False/AsExpected"
    status = harness.cr(NS, "default")["status"]
    assert (status["desiredNumberScheduled"], status["updatedNumberScheduled"], status["numberReady"]) == (3, 3, 3)

    _write_ds_status(harness, desiredNumberScheduled=3, updatedNumberScheduled=1,
                     numberAvailable=2, numberReady=2)
    wait_for(lambda: _reason(harness, "default", "Progressing") == "True/RolloutInProgress", what="rolling")
    assert _reason(harness, "default", "Available") == "True/PartiallyAvailable"
    # No movement for longer than the timeout: reported, not waited on.
    assert _reason(harness, "default", "Progressing") == "True/RolloutInProgress"
    harness.clock.advance(harness.config.stuck_after_seconds + 1)
    wait_for(lambda: _reason(harness, "default", "Progressing") == "False/RolloutStuck", what="stuck")
    assert _reason(harness, "default", "Degraded") == "True/RolloutStuck"
    _write_ds_status(harness, desiredNumberScheduled=3, updatedNumberScheduled=3,
                     numberAvailable=3, numberReady=3)
    wait_for(lambda: _reason(harness, "default", "Degraded") == "False/AsExpected", what="recovered")


def test_servicemonitor_appears_when_the_crd_is_served(harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    assert harness.cluster.objects("servicemonitors") == []
    harness.cluster.install_monitoring()
    wait_for(lambda: harness.cluster.objects("servicemonitors"), what="servicemonitor")
    sm = harness.cluster.objects("servicemonitors")[0]
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["endpoints"][0]["interval"] == "30s"
    rules = wait_for(lambda: harness.cluster.objects("prometheusrules"), what="prometheusrule")
    assert rules[0]["spec"]["groups"]
    wait_for(lambda: _reason(harness, "default", "Reconciled") == "True/Reconciled", what="reason")
    # Switched off: removed; the rule stays.
    harness.apply_cr(NS, "default", {"serviceMonitor": {"enabled": False}})
    wait_for(lambda: harness.cluster.objects("servicemonitors") == [], what="servicemonitor removed")
    assert len(harness.cluster.objects("prometheusrules")) == 1


def test_operator_restart_creates_no_duplicates_and_changes_nothing(harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    harness.apply_cr("team-a", "metrics", {"profile": "minimal"})
    wait_for(lambda: "team-a" in _config(harness).namespaceOverrides, what="override")
    harness.resync(2)
    cm_rv = harness.configmap()["metadata"]["resourceVersion"]
    ds_rv = harness.daemonset()["metadata"]["resourceVersion"]
    counts = {p: len(harness.cluster.objects(p)) for p in ("configmaps", "daemonsets", "services",
                                                          "serviceaccounts", "roles", "rolebindings")}
    harness.stop()
    restarted = harness.start()
    # Resume + several timer rounds: a reconcile beyond the resyncs is the resume's.
    harness.resync(4)
    wait_for(lambda: _reconciles(restarted) >= 5, what="resume and resyncs")
    assert {p: len(harness.cluster.objects(p)) for p in counts} == counts
    assert counts["configmaps"] == 1 and counts["daemonsets"] == 1
    assert harness.configmap()["metadata"]["resourceVersion"] == cm_rv
    assert harness.daemonset()["metadata"]["resourceVersion"] == ds_rv
    assert _config(harness).generation == 2


def _agent_pod(name: str, node: str, generation: int, collectors: dict[str, Any]) -> dict[str, Any]:
    report = {"node": node, "generation": generation, "collectors": collectors,
              "lastError": None, "time": "2026-01-01T00:00:00Z"}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": AGENTS,
                     "labels": {"app.kubernetes.io/name": "kpod-agent"},
                     "annotations": {"kpod.io/agent-status": json.dumps(report)}},
        "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "kpod-agent:dev"}]},
    }


def test_agent_reports_give_nodes_applied_and_collector_failures(harness: Harness, operator: Any) -> None:
    # Start from a ConfigMap at generation 6 with other content: the operator's is 7.
    stale = agentconfig.AgentConfig(generation=6, profile="minimal")
    harness.kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "kpod-agent-config", "namespace": AGENTS},
                         "data": {"agent.yaml": stale.to_yaml()}})
    harness.apply_cr(NS, "default", {"profile": "standard"})
    wait_for(lambda: _config(harness).generation == 7 and harness.daemonset(), what="generation 7")
    _write_ds_status(harness, desiredNumberScheduled=3, updatedNumberScheduled=3,
                     numberAvailable=3, numberReady=3)
    ok = {"cpu": {"attached": True}, "syscall": {"attached": True}}
    failed = {"cpu": {"attached": True},
              "syscall": {"attached": False, "error": "tracepoint syscalls:sys_enter_getppid: not found"}}
    harness.kube.create(_agent_pod("kpod-agent-a", "n1", 7, ok))
    harness.kube.create(_agent_pod("kpod-agent-b", "n2", 7, failed))
    harness.kube.create(_agent_pod("kpod-agent-c", "n3", 6, ok))
    # A pod that is not an agent's must not count.
    other = _agent_pod("web", "n4", 7, ok)
    other["metadata"]["labels"] = {"app": "web"}
    harness.kube.create(other)
    # n3 reports generation 6: named as behind (not just "not reporting yet").
    wait_for(lambda: harness.cr(NS, "default")["status"].get("nodesApplied") == "2/3"
             and "n3" in harness.condition(NS, "default", "ConfigApplied")["message"], what="2/3")
    status = harness.cr(NS, "default")["status"]
    assert status["collectorFailures"] == [{
        "node": "n2", "collector": "syscall",
        "reason": "tracepoint syscalls:sys_enter_getppid: not found"}]
    assert _reason(harness, "default", "ConfigApplied") == "False/ApplyPending"
    assert _reason(harness, "default", "Degraded") == "True/CollectorsFailed"

    report = {"node": "n3", "generation": 7, "collectors": ok, "lastError": None,
              "time": "2026-01-01T00:00:05Z"}
    harness.kube.merge_patch(f"/api/v1/namespaces/{AGENTS}/pods/kpod-agent-c",
                             {"metadata": {"annotations": {"kpod.io/agent-status": json.dumps(report)}}})
    wait_for(lambda: _reason(harness, "default", "ConfigApplied") == "True/AllNodesApplied", what="3/3")
    assert harness.cr(NS, "default")["status"]["nodesApplied"] == "3/3"


def test_conflicting_fleet_takes_over_when_the_active_one_is_deleted(harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    harness.apply_cr(NS, "second", {"profile": "minimal"})
    wait_for(lambda: _reason(harness, "second", "Reconciled") == "False/Conflict", what="conflict")
    second_uid = harness.cr(NS, "second")["metadata"]["uid"]
    harness.kube.request("DELETE", "/apis/kpod.io/v1alpha1/namespaces/kpod-system/kpodmetricsprofiles/default")
    wait_for(lambda: _config(harness).profile == "minimal", what="second fleet rendered")
    assert harness.cr(NS, "second")["metadata"]["uid"] == second_uid
    wait_for(lambda: (_reason(harness, "second", "Reconciled") or "").startswith("True/"), what="active")


def test_cli_runs_from_a_kubeconfig_without_prometheus_operator_crds(
        harness: Harness, tmp_path: Any) -> None:
    """`kpod-operator` as a process: plain-http kubeconfig, no monitoring.coreos.com."""
    import os
    import pathlib
    import signal
    import subprocess
    import sys

    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", harness.cluster.url)
    exe = pathlib.Path(sys.executable).parent / "kpod-operator"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KPOD_RESYNC_SECONDS": "1", "KPOD_OPERATOR_LISTEN": ""}
    env.pop("KPOD_OPERATOR_NAMESPACE", None)
    proc = subprocess.Popen([str(exe), "--namespace", NS, "--liveness", ""], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        harness.apply_cr(NS, "default", {"profile": "minimal"})
        wait_for(lambda: harness.configmap(), timeout=20, what="configmap from the CLI operator")
        wait_for(lambda: _reason(harness, "default", "Reconciled") == "True/ServiceMonitorCRDNotInstalled",
                 timeout=10, what="reconciled")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert _config(harness).profile == "minimal"
    assert "Traceback" not in out, out[-3000:]


def test_deleting_the_fleet_removes_the_agents_and_the_cluster_scoped_rbac(
        harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    harness.apply_cr(NS, "default", {"profile": "standard", "syscalls": ["read", "write"],
                                     "networkPolicy": {"enabled": True}})
    netpol = f"/apis/networking.k8s.io/v1/namespaces/{AGENTS}/networkpolicies/kpod-agent"
    wait_for(lambda: harness.get(netpol), what="NetworkPolicy")
    role = f"/apis/rbac.authorization.k8s.io/v1/clusterroles/kpod-agent-{NS}"
    binding = f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kpod-agent-{NS}"
    assert harness.get(role) is not None and harness.get(binding) is not None
    # Someone else's object in the agents' namespace stays.
    harness.kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "not-ours", "namespace": AGENTS}, "data": {}})
    harness.kube.request("DELETE", f"/apis/kpod.io/v1alpha1/namespaces/{NS}/kpodmetricsprofiles/default")
    wait_for(lambda: harness.get(role) is None and harness.get(binding) is None, what="cluster RBAC removed")
    for path in (*AGENT_PATHS, netpol):
        assert harness.get(path) is None, path
    assert harness.get(f"/api/v1/namespaces/{AGENTS}/configmaps/not-ours") is not None


def test_network_policy_follows_the_switch(harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    netpol = f"/apis/networking.k8s.io/v1/namespaces/{AGENTS}/networkpolicies/kpod-agent"
    assert harness.get(netpol) is None
    harness.apply_cr(NS, "default", {"networkPolicy": {"enabled": True, "namespaces": ["prom"]}})
    wait_for(lambda: harness.get(netpol), what="NetworkPolicy created")
    peer = harness.get(netpol)["spec"]["ingress"][0]["from"][0]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["prom"]
    harness.apply_cr(NS, "default", {"networkPolicy": {"enabled": False}})
    wait_for(lambda: harness.get(netpol) is None, what="NetworkPolicy deleted")


def test_moving_the_agents_to_another_namespace_removes_the_old_ones(harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    harness.apply_cr(NS, "default", {"agent": {"namespace": "observability"}})
    moved = "/apis/apps/v1/namespaces/observability/daemonsets/kpod-agent"
    wait_for(lambda: harness.get(moved) and all(harness.get(p) is None for p in AGENT_PATHS),
             what="agents moved")
    binding = harness.get(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kpod-agent-{NS}")
    assert binding["subjects"][0]["namespace"] == "observability"
    args = harness.get(moved)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["--configmap", "observability/kpod-agent-config"]


def test_garbage_in_the_status_is_overwritten_not_fatal(harness: Harness, operator: Any) -> None:
    _fleet_ready(harness)
    harness.kube.merge_patch(f"/apis/kpod.io/v1alpha1/namespaces/{NS}/kpodmetricsprofiles/default/status",
                             {"status": {"configGeneration": "abc", "conditions": "x", "rollout": {"since": 7}}})
    harness.apply_cr(NS, "default", {"profile": "minimal"})
    wait_for(lambda: _config(harness).profile == "minimal", what="still reconciling")
    wait_for(lambda: isinstance(harness.cr(NS, "default")["status"]["conditions"], list)
             and harness.cr(NS, "default")["status"]["configGeneration"] == 2, what="status rewritten")


def test_override_without_a_fleet_says_so(harness: Harness, operator: Any) -> None:
    harness.apply_cr("team-a", "metrics", {"profile": "minimal"})
    wait_for(lambda: _reason(harness, "metrics", "Reconciled", "team-a") == "False/NoFleetProfile",
             what="no fleet")
    assert harness.configmap() is None
    _fleet_ready(harness)
    wait_for(lambda: _reason(harness, "metrics", "Reconciled", "team-a") == "True/Merged", what="merged")
    assert "team-a" in _config(harness).namespaceOverrides


def test_a_refused_write_is_reported_and_retried(harness: Harness, operator: Any) -> None:
    harness.cluster.fail_writes("daemonsets", 403)
    harness.apply_cr(NS, "default", {"profile": "minimal"})
    wait_for(lambda: _reason(harness, "default", "Reconciled") == "False/ApplyFailed", what="apply failed")
    assert "DaemonSet/kpod-agent" in harness.condition(NS, "default", "Reconciled")["message"]
    assert _reason(harness, "default", "Degraded") == "True/ApplyFailed"
    # The other objects are in place; the config was written and is announced.
    assert _config(harness).profile == "minimal"
    assert harness.cr(NS, "default")["status"]["configGeneration"] == 1
    harness.cluster.fail_writes("daemonsets", None)
    wait_for(lambda: harness.daemonset(), what="daemonset after healing")
    wait_for(lambda: (_reason(harness, "default", "Reconciled") or "").startswith("True/"), what="recovered")
