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
AGENTS = "kpod-agents"
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
    ("maxCgroups", 8192), ("grafana", {"dashboard": {"enabled": True}}),
    ("otlp", {"enabled": False}), ("topology", {"maxEdges": 10}),
])
def test_override_rejects_fleet_only_fields_by_name(field: str, value: Any) -> None:
    with pytest.raises(model.SpecError, match=field):
        model.parse_override({"profile": "minimal", field: value})


def test_fleet_topology_cap_reaches_the_node_config() -> None:
    assert _config(_fleet()).topology.maxEdges == agentconfig.DEFAULT_TOPOLOGY_EDGES
    assert _config(_fleet(topology={"maxEdges": 500})).topology.maxEdges == 500
    with pytest.raises(model.SpecError, match="maxEdges"):
        _fleet(topology={"maxEdges": agentconfig.MAX_TOPOLOGY_EDGES + 1})


def test_otlp_renders_the_section_and_mounts_only_the_secret() -> None:
    fleet = _fleet(otlp={"enabled": True, "endpoint": "https://otel.example:4318", "interval": "30s",
                         "headersSecretRef": {"name": "otlp-auth", "key": "api"}})
    config = _config(fleet)
    assert config.otlp == agentconfig.OtlpConfig(enabled=True, endpoint="https://otel.example:4318", interval=30.0,
                                                 headersFile=agentconfig.OTLP_HEADERS_FILE)
    configmap = render.render_configmap(NS, config, OWNER)
    assert "otlp-auth" not in yaml.safe_dump(configmap)  # the ConfigMap names the file, not the Secret
    spec = _template(fleet)["spec"]
    (volume,) = [v for v in spec["volumes"] if "secret" in v]
    assert volume["secret"] == {"secretName": "otlp-auth", "items": [{"key": "api", "path": "headers"}],
                                "optional": False, "defaultMode": 0o400}
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": "/etc/kpod-agent/otlp", "readOnly": True}
    assert f"{mount['mountPath']}/headers" == config.otlp.headersFile
    kubernetes_validate.validate(render.render_daemonset(NS, fleet, OWNER), K8S_VERSION, strict=True)

    # No Secret named: no volume and no headers file; the template is the one without otlp.
    plain = _fleet(otlp={"enabled": True, "endpoint": "http://otel:4318"})
    assert _config(plain).otlp.headersFile == ""
    assert _template(plain) == _template(_fleet())
    assert _config(_fleet()).otlp == agentconfig.OtlpConfig()


def test_override_keeps_unset_fields_unset() -> None:
    override = model.parse_override({"collectors": {"cpu": {"enabled": False}}})
    assert override.profile is None and override.syscalls is None and override.podSelector is None


def test_generation_rises_only_when_content_changes() -> None:
    fleet = _fleet()
    first = _config(fleet, generation=3)
    same = _config(fleet, generation=1)
    assert render.next_generation(render.parse_running(first.to_yaml()), same) == 3
    changed = _config(_fleet(profile="minimal"), generation=1)
    assert render.next_generation(render.parse_running(first.to_yaml()), changed) == 4
    # The CR status remembers a higher one (ConfigMap deleted or edited): never go back.
    assert render.next_generation(render.parse_running(first.to_yaml()), same, floor=9) == 10
    assert render.next_generation(None, same, floor=0) == 1
    assert render.next_generation(render.parse_running("::: not yaml"), same, floor=5) == 6


# ---- DaemonSet ----

def test_daemonset_has_what_the_agent_needs() -> None:
    ds = render.render_daemonset(NS, _fleet(), OWNER)
    pod = ds["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["hostPID"] is True
    assert pod["serviceAccountName"] == "kpod-agent"
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {"/sys/fs/cgroup", "/sys/kernel", "/lib/modules", "/usr/src"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    # HOST_IP: the node's kubelet (kubelet discovery); the pod's 127.0.0.1 is not the node's.
    assert env == {"NODE_NAME": "spec.nodeName", "POD_NAME": "metadata.name",
                   "POD_NAMESPACE": "metadata.namespace", "HOST_IP": "status.hostIP"}
    args = container["args"]
    assert args[args.index("--configmap") + 1] == f"{NS}/kpod-agent-config"
    assert args[args.index("--node-name") + 1] == "$(NODE_NAME)"
    assert args[args.index("--listen") + 1] == "0.0.0.0:9090"
    assert ds["metadata"]["ownerReferences"] == [OWNER]
    assert ds["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "kpod-agent"}


def test_agent_runs_with_least_privilege() -> None:
    """All 14 collectors load and count with CAP_BPF + CAP_PERFMON, read-only
    host mounts and a read-only root (tests/bpf/test_least_privilege.py)."""
    pod = _template(_fleet())["spec"]
    container = pod["containers"][0]
    assert container["securityContext"] == {
        "privileged": False,
        "runAsUser": 0,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["BPF", "PERFMON"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    host_volumes = {v["name"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert host_volumes and all(mounts[name].get("readOnly") is True for name in host_volumes)
    # Writable: only pod-private scratch space (bcc's TMPDIR, the unpacked kheaders).
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp", "/var/lib/kpod/tmp", "/var/cache/kpod"}
    assert all("emptyDir" in v for v in pod["volumes"] if v["name"] in
               {m["name"] for m in container["volumeMounts"] if not m.get("readOnly")})


@pytest.mark.parametrize("agent, added", [
    ({"extraCapabilities": ["SYS_RESOURCE"]}, ["BPF", "PERFMON", "SYS_RESOURCE"]),  # kernels 5.8-5.10
    ({"extraCapabilities": ["SYS_ADMIN", "SYS_RESOURCE"]},
     ["BPF", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE"]),  # before 5.8
    ({"sysAdmin": True}, ["BPF", "PERFMON", "SYS_ADMIN"]),  # the older switch
])
def test_older_kernels_get_more_capabilities_only_when_asked(agent: dict[str, Any], added: list[str]) -> None:
    caps = _template(_fleet(agent=agent))["spec"]["containers"][0]["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"], "add": added}


def test_agent_extra_capabilities_are_a_closed_list() -> None:
    with pytest.raises(model.SpecError, match="agent.extraCapabilities"):
        _fleet(agent={"extraCapabilities": ["NET_ADMIN"]})


def test_agent_is_scheduled_on_every_node_by_default() -> None:
    pod = _template(_fleet())["spec"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists", "effect": "NoSchedule"},
                                  {"operator": "Exists", "effect": "NoExecute"}]
    assert "affinity" not in pod and "imagePullSecrets" not in pod
    # An explicit empty list means: no tolerations.
    assert "tolerations" not in _template(_fleet(agent={"tolerations": []}))["spec"]


def test_scheduling_and_pod_metadata_knobs() -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}}
    template = _template(_fleet(agent={
        "imagePullSecrets": [{"name": "regcred"}], "affinity": affinity, "priorityClassName": "mine",
        "podAnnotations": {"example.com/scrape": "no"}, "podLabels": {"team": "obs"}}))
    pod = template["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["affinity"] == affinity
    assert pod["priorityClassName"] == "mine"
    assert template["metadata"]["annotations"] == {"example.com/scrape": "no"}
    assert template["metadata"]["labels"]["team"] == "obs"
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "kpod-agent"
    with pytest.raises(model.SpecError, match="agent.podLabels"):
        _fleet(agent={"podLabels": {"app.kubernetes.io/name": "other"}})



@pytest.mark.parametrize("spec", [
    {"profile": "comprehensive"},
    {"collectors": {"syscall": {"enabled": True, "interval": "1s"}}},
    {"syscalls": ["read"]},
    {"namespaces": {"include": ["prod"]}},
    {"podSelector": {"matchLabels": {"app": "web"}}},
    {"includeLabels": ["team"]},
    {"histogramBuckets": {"max": "2s"}},
    {"maxCgroups": 16384},
])
def test_node_config_changes_leave_the_pod_template_alone(spec: dict[str, Any]) -> None:
    assert _template(_fleet(**spec)) == _template(_fleet())


@pytest.mark.parametrize("agent", [
    {"image": "kpod-agent:2"},
    {"imagePullPolicy": "Always"},
    {"resources": {"requests": {"cpu": "100m"}}},
    {"nodeSelector": {"kubernetes.io/os": "linux"}},
    {"tolerations": [{"operator": "Exists"}]},
    {"priorityClassName": "other"},
    {"imagePullSecrets": [{"name": "regcred"}]},
    {"podAnnotations": {"a": "b"}},
    {"extraCapabilities": ["SYS_RESOURCE"]},
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
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch"]}]
    role_rules = objs["Role"]["rules"]
    cm_rule = next(r for r in role_rules if r["resources"] == ["configmaps"])
    assert cm_rule["resourceNames"] == ["kpod-agent-config"]
    assert "create" not in cm_rule["verbs"] and "patch" not in cm_rule["verbs"]
    pod_rule = next(r for r in role_rules if r["resources"] == ["pods"])
    assert pod_rule["verbs"] == ["patch"]
    assert objs["Role"]["metadata"]["namespace"] == AGENTS
    # Cluster-scoped objects cannot be owned by a namespaced CR.
    assert "ownerReferences" not in objs["ClusterRole"]["metadata"]
    kubelet = _by_kind(render.render_rbac(NS, _fleet(agent={"discovery": {"mode": "kubelet"}}), OWNER))
    assert {"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]} in kubelet["ClusterRole"]["rules"]


# ---- validation against real schemas ----

def _all_objects(tmp_rules: pathlib.Path | None = None) -> list[dict[str, Any]]:
    affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {
        "matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}}]}}
    fleet = _fleet(agent={"tolerations": [{"operator": "Exists"}], "nodeSelector": {"a": "b"},
                          "priorityClassName": "p", "updateStrategy": {"maxUnavailable": "10%"},
                          "imagePullSecrets": [{"name": "regcred"}], "affinity": affinity,
                          "podAnnotations": {"a": "b"}, "podLabels": {"team": "obs"},
                          "extraCapabilities": ["SYS_ADMIN", "SYS_RESOURCE"]},
                   networkPolicy={"enabled": True, "podSelector": {"matchLabels": {"app": "prometheus"}}},
                   otlp={"enabled": True, "endpoint": "http://otel:4318", "headersSecretRef": {"name": "otlp-auth"}})
    config = _config(fleet, {"team-a": {"profile": "comprehensive"}})
    return render.render_workload(NS, fleet, config, OWNER) + \
        render.render_monitoring(NS, fleet, OWNER, render.load_rule_groups(tmp_rules or render.RULES_ASSET))


def test_workload_manifests_validate_against_kubernetes_schemas() -> None:
    objs = [o for o in _all_objects() if not o["apiVersion"].startswith("monitoring.coreos.com")]
    assert {o["kind"] for o in objs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                         "RoleBinding", "ConfigMap", "DaemonSet", "Service", "NetworkPolicy"}
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


def test_servicemonitor_keeps_the_workload_labels_and_names_the_agent() -> None:
    endpoint = render.render_service_monitor(NS, _fleet(), OWNER)["spec"]["endpoints"][0]
    assert endpoint["honorLabels"] is True
    targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert targets == {"instance": ["__meta_kubernetes_pod_node_name"],
                       "agent_pod": ["__meta_kubernetes_pod_name"]}


# ---- NetworkPolicy ----

def test_network_policy_only_when_asked() -> None:
    fleet = _fleet()
    assert "NetworkPolicy" not in {o["kind"] for o in render.render_workload(NS, fleet, _config(fleet), OWNER)}
    assert render.unwanted_workload(fleet) == [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                                "metadata": {"name": "kpod-agent", "namespace": AGENTS}}]


def test_network_policy_lets_only_the_scraping_namespaces_in() -> None:
    fleet = _fleet(networkPolicy={"enabled": True})
    np = next(o for o in render.render_workload(NS, fleet, _config(fleet), OWNER) if o["kind"] == "NetworkPolicy")
    assert np["metadata"]["namespace"] == AGENTS
    assert np["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "kpod-agent"}}
    assert np["spec"]["policyTypes"] == ["Ingress"]
    assert np["spec"]["ingress"] == [{
        "from": [{"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["monitoring"]}]}}],
        "ports": [{"port": "metrics", "protocol": "TCP"}]}]
    assert render.unwanted_workload(fleet) == []
    # The Prometheus' own namespace selector, and only its pods.
    chosen = _fleet(networkPolicy={"enabled": True, "namespaceSelector": {"matchLabels": {"team": "obs"}},
                                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}})
    peer = render.render_network_policy(AGENTS, chosen, None)["spec"]["ingress"][0]["from"][0]
    assert peer == {"namespaceSelector": {"matchLabels": {"team": "obs"}, "matchExpressions": []},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"},
                                    "matchExpressions": []}}
    kubernetes_validate.validate(render.render_network_policy(AGENTS, chosen, None), K8S_VERSION, strict=True)


def test_network_policy_is_fleet_only() -> None:
    with pytest.raises(model.SpecError, match="networkPolicy"):
        model.parse_override({"networkPolicy": {"enabled": True}})


# ---- the agents' namespace ----

def test_agents_run_in_their_own_namespace() -> None:
    """What the agents may write (their Pods) is never in the operator's namespace."""
    fleet = _fleet()
    objs = render.render_workload(NS, fleet, _config(fleet), OWNER)
    namespaced = [o for o in objs if o["kind"] not in ("ClusterRole", "ClusterRoleBinding")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {AGENTS}
    # Owner references cannot cross namespaces: the operator removes these itself.
    assert all("ownerReferences" not in o["metadata"] for o in objs)
    by_kind = _by_kind(objs)
    args = by_kind["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--configmap") + 1] == f"{AGENTS}/kpod-agent-config"
    assert by_kind["ClusterRoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "kpod-agent", "namespace": AGENTS}]
    assert render.bound_agent_namespace(by_kind["ClusterRoleBinding"]) == AGENTS
    assert {(o["kind"], o["metadata"]["namespace"]) for o in render.agent_objects(AGENTS)} >= {
        (o["kind"], AGENTS) for o in namespaced}
    sm = render.render_service_monitor(NS, fleet, OWNER)
    assert sm["metadata"]["namespace"] == NS and sm["spec"]["namespaceSelector"] == {"matchNames": [AGENTS]}
    # Chosen in the fleet CR; the operator's own namespace keeps the owner references.
    other = _fleet(agent={"namespace": "observability"})
    assert {o["metadata"].get("namespace") for o in render.render_workload(NS, other, _config(other), OWNER)} \
        == {"observability", None}
    same = _fleet(agent={"namespace": NS})
    assert _by_kind(render.render_workload(NS, same, _config(same), OWNER))["DaemonSet"]["metadata"][
        "ownerReferences"] == [OWNER]
    with pytest.raises(model.SpecError, match="agent.namespace"):
        _fleet(agent={"namespace": "Not_A_Namespace"})


def test_fleet_max_cgroups_reaches_the_node_config() -> None:
    default = render.render_agent_config(model.parse_fleet({}), {}, 1)
    assert default.maxCgroups == agentconfig.DEFAULT_MAX_CGROUPS
    sized = render.render_agent_config(model.parse_fleet({"maxCgroups": 16384}), {}, 1)
    assert sized.maxCgroups == 16384


@pytest.mark.parametrize("value", [32, 2_000_000, "4096"])
def test_fleet_max_cgroups_outside_the_agents_bounds_is_refused(value: Any) -> None:
    with pytest.raises(model.SpecError, match="maxCgroups"):
        model.parse_fleet({"maxCgroups": value})


def test_the_json_shortcut_of_the_size_check_is_safe_for_the_deepest_override() -> None:
    """size_error skips the YAML dump when 8x the JSON fits: block YAML of the
    most deeply nested, shortest items an override has stays well under that."""
    import json

    # distinct objects: YAML would write repeats of one object as aliases
    deepest = {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"] * 500}
                                                    for _ in range(20)]},
               "syscalls": ["x"] * 500, "collectors": {"syscall": {"enabled": True, "interval": "1s"}}}
    ratio = render._yaml_size(deepest) / len(json.dumps(deepest))
    assert ratio < render._YAML_OVER_JSON / 2, ratio
    # and the shortcut still refuses what is too big
    assert render.size_error({"syscalls": ["x" * 1000] * 100}, 64 * 1024, "override") is not None
