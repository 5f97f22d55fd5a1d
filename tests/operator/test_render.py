"""Pure rendering: node config, workload manifests, monitoring objects."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kpod_agent import config as agentconfig
from kpod_operator import model, render

from .schemas import crd_validator, fixture_crd

NS = "kpod-system"
OWNER = {"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile", "name": "default",
         "uid": "0b7c1d2e-0000-4000-8000-000000000001", "controller": True, "blockOwnerDeletion": True}
K8S_VERSION = "1.30.0"


def _fleet(**spec: Any) -> model.FleetSpec:
    return model.parse_fleet(spec)


def _config(fleet: model.FleetSpec, overrides: dict[str, Any] | None = None, generation: int = 1
            ) -> agentconfig.AgentConfig:
    parsed = {ns: model.parse_override(s) for ns, s in (overrides or {}).items()}
    return render.render_agent_config(fleet, parsed, generation)


def _template(fleet: model.FleetSpec) -> dict[str, Any]:
    return render.render_daemonset(NS, fleet, OWNER)["spec"]["template"]


# ---- node config ----

def test_node_config_is_what_the_agent_parses() -> None:
    fleet = _fleet(profile="minimal", syscalls=["read"], includeLabels=["app"],
                   collectors={"syscall": {"enabled": True, "interval": "30s"}},
                   agent={"discovery": {"mode": "kubelet"}})
    config = _config(fleet, {"team-a": {"profile": "comprehensive", "syscalls": ["futex"]}}, generation=4)
    parsed = agentconfig.parse_config(config.to_yaml())
    assert parsed == config
    assert parsed.generation == 4
    assert parsed.profile == "minimal"
    assert parsed.discovery.mode == "kubelet"
    assert parsed.includeLabels == ["app"]
    assert parsed.syscalls_for("team-a") == ["futex"]
    assert set(parsed.enabled_collectors()) == {"cpu", "memory", "diskIO", "syscall"}
    assert set(parsed.enabled_collectors("team-a")) == set(agentconfig.COLLECTOR_NAMES)


def test_fleet_defaults_fill_the_node_config() -> None:
    config = _config(_fleet())
    assert config.profile == "standard"
    assert config.syscalls == list(agentconfig.DEFAULT_SYSCALLS)
    assert config.discovery.mode == "informer"
    assert config.namespaces.exclude == ["kube-system", "kube-public"]


@pytest.mark.parametrize("field, value", [
    ("namespaces", {"include": ["a"]}), ("includeLabels", ["app"]),
    ("histogramBuckets", {"max": "1s"}), ("agent", {"image": "x:1"}),
    ("serviceMonitor", {"enabled": False}), ("prometheusRule", {"enabled": False}),
])
def test_override_rejects_fleet_only_fields_by_name(field: str, value: Any) -> None:
    with pytest.raises(model.SpecError, match=field):
        model.parse_override({"profile": "minimal", field: value})


def test_override_keeps_unset_fields_unset() -> None:
    override = model.parse_override({"collectors": {"cpu": {"enabled": False}}})
    assert override.profile is None and override.syscalls is None and override.podSelector is None


def test_generation_rises_only_when_content_changes() -> None:
    fleet = _fleet()
    first = _config(fleet, generation=3)
    same = _config(fleet, generation=1)
    assert render.next_generation(first.to_yaml(), same) == 3
    changed = _config(_fleet(profile="minimal"), generation=1)
    assert render.next_generation(first.to_yaml(), changed) == 4
    # The CR status remembers a higher one (ConfigMap deleted or edited): never go back.
    assert render.next_generation(first.to_yaml(), same, floor=9) == 10
    assert render.next_generation(None, same, floor=0) == 1
    assert render.next_generation("::: not yaml", same, floor=5) == 6


# ---- DaemonSet ----

def test_daemonset_has_what_the_agent_needs() -> None:
    ds = render.render_daemonset(NS, _fleet(), OWNER)
    pod = ds["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["hostPID"] is True
    assert pod["serviceAccountName"] == "kpod-agent"
    assert sorted(container["securityContext"]["capabilities"]["add"]) == \
        sorted(["BPF", "PERFMON", "SYS_RESOURCE", "NET_ADMIN"])
    assert container["securityContext"]["privileged"] is False
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {"/sys/fs/cgroup", "/sys/kernel", "/lib/modules", "/usr/src"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"NODE_NAME": "spec.nodeName", "POD_NAME": "metadata.name",
                   "POD_NAMESPACE": "metadata.namespace"}
    args = container["args"]
    assert args[args.index("--configmap") + 1] == f"{NS}/kpod-agent-config"
    assert args[args.index("--node-name") + 1] == "$(NODE_NAME)"
    assert args[args.index("--listen") + 1] == "0.0.0.0:9090"
    assert ds["metadata"]["ownerReferences"] == [OWNER]
    assert ds["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "kpod-agent"}


def test_sys_admin_only_when_asked() -> None:
    caps = render.render_daemonset(NS, _fleet(agent={"sysAdmin": True}), OWNER)[
        "spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
    assert "SYS_ADMIN" in caps


@pytest.mark.parametrize("spec", [
    {"profile": "comprehensive"},
    {"collectors": {"syscall": {"enabled": True, "interval": "1s"}}},
    {"syscalls": ["read"]},
    {"namespaces": {"include": ["prod"]}},
    {"podSelector": {"matchLabels": {"app": "web"}}},
    {"includeLabels": ["team"]},
    {"histogramBuckets": {"max": "2s"}},
])
def test_node_config_changes_leave_the_pod_template_alone(spec: dict[str, Any]) -> None:
    assert _template(_fleet(**spec)) == _template(_fleet())


@pytest.mark.parametrize("agent", [
    {"image": "kpod-agent:2"},
    {"imagePullPolicy": "Always"},
    {"resources": {"requests": {"cpu": "100m"}}},
    {"nodeSelector": {"kubernetes.io/os": "linux"}},
    {"tolerations": [{"operator": "Exists"}]},
    {"priorityClassName": "system-node-critical"},
])
def test_agent_changes_roll_the_pod_template(agent: dict[str, Any]) -> None:
    assert _template(_fleet(agent=agent)) != _template(_fleet())


def test_update_strategy_comes_from_the_cr() -> None:
    ds = render.render_daemonset(NS, _fleet(agent={"updateStrategy": {"maxUnavailable": "25%"}}), OWNER)
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%"}}


# ---- RBAC ----

def _by_kind(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objs}


def test_agent_rbac_is_least_privilege() -> None:
    objs = _by_kind(render.render_rbac(NS, _fleet(), OWNER))
    assert objs["ClusterRole"]["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    role_rules = objs["Role"]["rules"]
    cm_rule = next(r for r in role_rules if r["resources"] == ["configmaps"])
    assert cm_rule["resourceNames"] == ["kpod-agent-config"]
    assert "create" not in cm_rule["verbs"] and "patch" not in cm_rule["verbs"]
    pod_rule = next(r for r in role_rules if r["resources"] == ["pods"])
    assert pod_rule["verbs"] == ["patch"]
    assert objs["Role"]["metadata"]["namespace"] == NS
    # Cluster-scoped objects cannot be owned by a namespaced CR.
    assert "ownerReferences" not in objs["ClusterRole"]["metadata"]
    kubelet = _by_kind(render.render_rbac(NS, _fleet(agent={"discovery": {"mode": "kubelet"}}), OWNER))
    assert {"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]} in kubelet["ClusterRole"]["rules"]


# ---- validation against real schemas ----

def _all_objects(tmp_rules: pathlib.Path | None = None) -> list[dict[str, Any]]:
    fleet = _fleet(agent={"tolerations": [{"operator": "Exists"}], "nodeSelector": {"a": "b"},
                          "priorityClassName": "p", "updateStrategy": {"maxUnavailable": "10%"}})
    config = _config(fleet, {"team-a": {"profile": "comprehensive"}})
    return render.render_workload(NS, fleet, config, OWNER) + \
        render.render_monitoring(NS, fleet, OWNER, render.load_rule_groups(tmp_rules or render.RULES_ASSET))


def test_workload_manifests_validate_against_kubernetes_schemas() -> None:
    objs = [o for o in _all_objects() if not o["apiVersion"].startswith("monitoring.coreos.com")]
    assert {o["kind"] for o in objs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                         "RoleBinding", "ConfigMap", "DaemonSet", "Service"}
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("kind, fixture", [
    ("ServiceMonitor", "monitoring.coreos.com_servicemonitors.yaml"),
    ("PrometheusRule", "monitoring.coreos.com_prometheusrules.yaml"),
])
def test_monitoring_objects_validate_against_prometheus_operator_crds(kind: str, fixture: str) -> None:
    obj = next(o for o in _all_objects() if o["kind"] == kind)
    validator = crd_validator(fixture_crd(fixture), strict=True)
    assert [e.message for e in validator.iter_errors(obj)] == []


def test_rule_groups_fall_back_until_the_asset_exists(tmp_path: pathlib.Path) -> None:
    assert render.load_rule_groups(tmp_path / "absent.yaml") == render.DEFAULT_RULE_GROUPS
    broken = tmp_path / "broken.yaml"
    broken.write_text("groups: [unclosed")
    assert render.load_rule_groups(broken) == render.DEFAULT_RULE_GROUPS
    good = tmp_path / "rules.yaml"
    good.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "r", "expr": "1"}]}]}))
    assert render.load_rule_groups(good)[0]["name"] == "g"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
@pytest.mark.parametrize("source", ["default", "asset"])
def test_rendered_rules_pass_promtool(source: str, tmp_path: pathlib.Path) -> None:
    if source == "asset" and not render.RULES_ASSET.exists():
        pytest.skip("rules asset not written yet; the default group is checked")
    path = tmp_path / "absent.yaml" if source == "default" else render.RULES_ASSET
    rule = render.render_prometheus_rule(NS, _fleet(), OWNER, render.load_rule_groups(path))
    out = tmp_path / "rules.yaml"
    out.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(["promtool", "check", "rules", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_service_is_headless_on_the_metrics_port() -> None:
    svc = render.render_service(NS, OWNER)
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]


def test_servicemonitor_follows_the_spec() -> None:
    fleet = _fleet(serviceMonitor={"interval": "15s", "scrapeTimeout": "5s", "labels": {"release": "prom"}})
    sm = render.render_service_monitor(NS, fleet, OWNER)
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["interval"] == "15s"
    assert sm["spec"]["endpoints"][0]["scrapeTimeout"] == "5s"
    assert render.render_monitoring(NS, _fleet(serviceMonitor={"enabled": False},
                                               prometheusRule={"enabled": False}), OWNER, []) == []
