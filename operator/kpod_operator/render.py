"""Pure rendering: fleet spec + override specs -> node config and manifests.

No I/O here except reading the packaged assets (PrometheusRule, dashboard). Every function
returns plain dicts ready to send to the API, so tests check objects, not calls.
"""
from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

import yaml

from kpod_agent import config as agentconfig
from kpod_agent.contract import CONFIG_KEY
from kpod_operator import model

AGENT_NAME = "kpod-agent"
CONFIGMAP_NAME = "kpod-agent-config"
METRICS_PORT = 9090
APP_LABEL = "app.kubernetes.io/name"
SELECTOR_LABELS = {APP_LABEL: AGENT_NAME}
COMMON_LABELS = {
    APP_LABEL: AGENT_NAME,
    "app.kubernetes.io/part-of": "kpod-metrics",
    "app.kubernetes.io/managed-by": "kpod-operator",
}
RULES_ASSET = pathlib.Path(__file__).parent / "assets" / "prometheus-rules.yaml"
# Written by dashboards/generate.py beside dashboards/kpod-metrics.json.
DASHBOARD_ASSET = pathlib.Path(__file__).parent / "assets" / "kpod-metrics.json"
DASHBOARD_NAME = "kpod-metrics-dashboard"
DASHBOARD_KEY = "kpod-metrics.json"
# Where the ClusterRoleBinding records the dashboard's namespace (see render_rbac).
DASHBOARD_NAMESPACE_ANNOTATION = "kpod.io/grafana-dashboard-namespace"
# Old locations whose deletion has not succeeded yet (comma-separated
# namespaces), kept on the binding until it has, so a failed delete is retried
# rather than forgotten.
PENDING_DASHBOARD_ANNOTATION = "kpod.io/pending-delete-dashboard-namespaces"
PENDING_AGENTS_ANNOTATION = "kpod.io/pending-delete-agent-namespaces"

# Used until the rules asset exists: the one alert nobody wants to miss.
DEFAULT_RULE_GROUPS: list[dict[str, Any]] = [{
    "name": "kpod-agent.rules",
    "rules": [{
        "alert": "KpodCollectorDetached",
        "expr": "kpod_collector_attached == 0",
        "for": "10m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "kpod collector {{ $labels.collector }} is not attached on {{ $labels.node }}",
        },
    }],
}]


def render_agent_config(
    fleet: model.FleetSpec,
    overrides: dict[str, agentconfig.NamespaceOverride],
    generation: int,
    cluster_name: str = "",
) -> agentconfig.AgentConfig:
    """The node config the agents run, validated by the agent's own model."""
    return agentconfig.config_from_dict({
        "generation": generation,
        "clusterName": cluster_name,
        "profile": fleet.profile,
        "collectors": {k: v.model_dump(mode="json", exclude_none=True) for k, v in fleet.collectors.items()},
        "syscalls": fleet.syscalls,
        "namespaces": fleet.namespaces.model_dump(mode="json"),
        "podSelector": fleet.podSelector.model_dump(mode="json"),
        "includeLabels": fleet.includeLabels,
        "namespaceOverrides": {
            ns: ov.model_dump(mode="json", exclude_none=True) for ns, ov in sorted(overrides.items())
        },
        "discovery": fleet.agent.discovery.model_dump(mode="json"),
        "histogramBuckets": fleet.histogramBuckets.model_dump(mode="json"),
        "maxCgroups": fleet.maxCgroups,
        "topology": fleet.topology.model_dump(mode="json"),
        # The headers stay in their Secret: the node config names the file it is mounted as.
        "otlp": {"enabled": fleet.otlp.enabled, "endpoint": fleet.otlp.endpoint,
                 "interval": agentconfig.format_duration(fleet.otlp.interval),
                 "headersFile": agentconfig.OTLP_HEADERS_FILE if fleet.otlp.headersSecretRef else ""},
    })


# One override's share of the node config. All 512 syscalls plus a big pod
# selector stay under 16 KiB; this bounds what one namespace can take of the
# agent's 1 MiB document (agentconfig.MAX_DOCUMENT_BYTES).
MAX_OVERRIDE_BYTES = 64 * 1024


def _yaml_size(value: Any) -> int:
    # libyaml when present: sizing a refused 1 MiB list takes 0.3 s, not 1 s.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return len(yaml.dump(value, Dumper=dumper, sort_keys=False).encode())


# Block YAML is never this many times its compact JSON for our documents: the
# deepest, shortest items (one-character values four levels down) make 1.6x.
_YAML_OVER_JSON = 8


def size_error(data: dict[str, Any], limit: int, what: str) -> str | None:
    """None if ``data`` as YAML fits in ``limit`` bytes, else a message naming
    its largest fields (two levels deep), so the CR's author knows what to cut."""
    if len(json.dumps(data)) * _YAML_OVER_JSON <= limit:
        return None  # far under: spare the YAML dump (1,000 overrides: 0.3 s per reconcile)
    total = _yaml_size(data)
    if total <= limit:
        return None
    parts: list[tuple[int, str]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            parts += [(_yaml_size(v), f"{key}.{sub}") for sub, v in value.items()]
        else:
            parts.append((_yaml_size(value), str(key)))
    largest = ", ".join(f"{name} ({size} bytes)" for size, name in sorted(parts, reverse=True)[:3])
    return f"{what} would be {total} bytes, more than the {limit} allowed; largest: {largest}"


def config_content(config: agentconfig.AgentConfig) -> dict[str, Any]:
    """What the agents run, without the generation stamp: equal content, same generation."""
    data = config.model_dump(mode="json")
    data.pop("generation", None)
    return data


def parse_running(text: str | None) -> agentconfig.AgentConfig | None:
    """The node config in the agents' ConfigMap; None when absent or unreadable."""
    if not text:
        return None
    try:
        return agentconfig.parse_config(text)
    except agentconfig.ConfigError:
        return None


def next_generation(
    current: agentconfig.AgentConfig | None,
    desired: agentconfig.AgentConfig,
    floor: int = 0,
) -> int:
    """Generation to stamp on ``desired``: kept when the content is unchanged,
    else one above both the running config's (``current``, see parse_running)
    and ``floor`` (the CR status), so it never goes backwards even if the
    ConfigMap was deleted or hand-edited."""
    if current is not None and config_content(current) == config_content(desired) \
            and current.generation >= floor and current.generation > 0:
        return current.generation
    return max(current.generation if current else 0, floor) + 1


def owner_reference(fleet: dict[str, Any]) -> dict[str, Any]:
    meta = fleet["metadata"]
    return {
        "apiVersion": f"{model.GROUP}/{model.VERSION}",
        "kind": model.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def crd_owner_reference(uid: str) -> dict[str, Any]:
    """The KpodMetricsProfile CRD as owner (no blockOwnerDeletion: that would
    need update on the CRD's finalizers)."""
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "name": f"{model.PLURAL}.{model.GROUP}", "uid": uid}


def _meta(name: str, namespace: str | None, owner: dict[str, Any] | None,
          labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**COMMON_LABELS, **(labels or {})}}
    if namespace is not None:
        meta["namespace"] = namespace
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def render_configmap(namespace: str, config: agentconfig.AgentConfig,
                     owner: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(CONFIGMAP_NAME, namespace, owner,
                          {"kpod.io/config-generation": str(config.generation)}),
        "data": {CONFIG_KEY: config.to_yaml()},
    }


def _host_volume(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path, "type": "Directory"}}


# Host paths, all read-only: cgroups and /proc (hostPID) to attribute, /sys/kernel
# for tracefs, BTF and kheaders, /lib/modules and /usr/src for the headers.
HOST_MOUNTS = [("cgroup", "/sys/fs/cgroup"), ("sys-kernel", "/sys/kernel"),
               ("modules", "/lib/modules"), ("usr-src", "/usr/src")]
# Writable scratch under a read-only root filesystem: TMPDIR (bcc's compile
# and kheaders), the entrypoint's unpacked-kheaders cache, and /tmp.
OTLP_VOLUME = "otlp-headers"
SCRATCH_MOUNTS = [("tmp", "/tmp"), ("bcc-tmp", "/var/lib/kpod/tmp"), ("headers-cache", "/var/cache/kpod")]


def agent_security_context(agent: model.AgentSpec) -> dict[str, Any]:
    """Root (to read every pod's /proc and cgroup files) with no capability but
    BPF and PERFMON: all 14 collectors load and count with these on kernels
    >= 5.11; older kernels get extraCapabilities."""
    return {
        "privileged": False,
        "runAsUser": 0,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": agent.capabilities},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def render_daemonset(namespace: str, fleet: model.FleetSpec,
                     owner: dict[str, Any] | None) -> dict[str, Any]:
    """The agent DaemonSet. Its pod template depends on spec.agent and on which
    Secret holds the OTLP headers (spec.otlp.headersSecretRef) only: node config
    changes travel through the watched ConfigMap and never restart pods."""
    agent = fleet.agent
    resources: dict[str, Any] = {}
    if agent.resources.requests:
        resources["requests"] = {k: str(v) for k, v in agent.resources.requests.items()}
    if agent.resources.limits:
        resources["limits"] = {k: str(v) for k, v in agent.resources.limits.items()}
    probe = {"port": "metrics", "scheme": "HTTP"}
    container: dict[str, Any] = {
        "name": "agent",
        "image": agent.image,
        "imagePullPolicy": agent.imagePullPolicy,
        "args": [
            "--configmap", f"{namespace}/{CONFIGMAP_NAME}",
            "--node-name", "$(NODE_NAME)",
            "--listen", f"0.0.0.0:{METRICS_PORT}",
        ],
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            # The node's address: the kubelet, in kubelet discovery mode (the
            # pod's own 127.0.0.1 is not the node's).
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        ],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "livenessProbe": {"httpGet": {"path": "/healthz", **probe},
                          "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz", **probe},
                           "periodSeconds": 5, "failureThreshold": 3},
        "securityContext": agent_security_context(agent),
        "volumeMounts": [
            *({"name": name, "mountPath": path, "readOnly": True} for name, path in HOST_MOUNTS),
            *({"name": name, "mountPath": path} for name, path in SCRATCH_MOUNTS),
        ],
    }
    if resources:
        container["resources"] = resources
    secret_ref = fleet.otlp.headersSecretRef
    directory, _, file_name = agentconfig.OTLP_HEADERS_FILE.rpartition("/")
    if secret_ref is not None:
        # Read through the volume: the agent needs no API access to Secrets.
        container["volumeMounts"].append({"name": OTLP_VOLUME, "mountPath": directory, "readOnly": True})
    pod_spec: dict[str, Any] = {
        "serviceAccountName": AGENT_NAME,
        "hostPID": True,
        "containers": [container],
        "volumes": [
            *(_host_volume(name, path) for name, path in HOST_MOUNTS),
            *({"name": name, "emptyDir": {}} for name, _ in SCRATCH_MOUNTS),
        ],
        "terminationGracePeriodSeconds": 30,
    }
    if secret_ref is not None:
        pod_spec["volumes"].append({"name": OTLP_VOLUME, "secret": {
            "secretName": secret_ref.name, "items": [{"key": secret_ref.key, "path": file_name}],
            "optional": False, "defaultMode": 0o400}})
    if agent.nodeSelector:
        pod_spec["nodeSelector"] = dict(agent.nodeSelector)
    if agent.tolerations:
        pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in agent.tolerations]
    if agent.priorityClassName:
        pod_spec["priorityClassName"] = agent.priorityClassName
    if agent.imagePullSecrets:
        pod_spec["imagePullSecrets"] = [ref.model_dump() for ref in agent.imagePullSecrets]
    if agent.affinity:
        pod_spec["affinity"] = copy.deepcopy(agent.affinity)
    template_meta: dict[str, Any] = {"labels": {**agent.podLabels, **COMMON_LABELS}}
    if agent.podAnnotations:
        template_meta["annotations"] = dict(agent.podAnnotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(AGENT_NAME, namespace, owner),
        "spec": {
            "selector": {"matchLabels": dict(SELECTOR_LABELS)},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": agent.updateStrategy.maxUnavailable},
            },
            "template": {
                "metadata": template_meta,
                "spec": pod_spec,
            },
        },
    }


def render_service(namespace: str, owner: dict[str, Any] | None) -> dict[str, Any]:
    # Headless: Prometheus scrapes every agent, not a load-balanced one.
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(AGENT_NAME, namespace, owner),
        "spec": {
            "clusterIP": "None",
            "selector": dict(SELECTOR_LABELS),
            "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics",
                       "protocol": "TCP"}],
        },
    }


def cluster_role_name(namespace: str) -> str:
    """The agent's ClusterRole and binding, named after the operator's namespace."""
    return f"{AGENT_NAME}-{namespace}"


def render_rbac(namespace: str, fleet: model.FleetSpec,
                owner: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Least privilege for the agent, whose ServiceAccount, Role and binding
    live in the agents' namespace (``owner`` only if that is ``namespace``).

    Cluster-scoped objects cannot have a namespaced owner (the garbage collector
    refuses such references), so the ClusterRole and its binding carry labels
    only and are named after the operator's namespace; they hold no secrets."""
    agent_ns = fleet.agent.namespace
    cluster_name = cluster_role_name(namespace)
    # Exactly the calls the agent makes: the informer lists and watches pods
    # of all namespaces (field selector spec.nodeName) and Services (their
    # ClusterIPs name the Service behind a connection in the topology); the
    # kubelet mode reads the kubelet's /pods instead, which the kubelet
    # authorizes as nodes/proxy.
    if fleet.agent.discovery.mode == "kubelet":
        pod_rules = [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}]
    else:
        pod_rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
                     {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch"]}]
    # The binding outlives the CR until the operator deletes it: besides the
    # agents' namespace (its subject) it records where the dashboard is, so
    # that a move, switching it off or deleting the fleet removes it.
    binding_meta = _meta(cluster_name, None, None)
    dashboard_ns = dashboard_namespace(fleet)
    if dashboard_ns is not None:
        binding_meta["annotations"] = {DASHBOARD_NAMESPACE_ANNOTATION: dashboard_ns}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(AGENT_NAME, agent_ns, owner)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(cluster_name, None, None),
            "rules": pod_rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": binding_meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
            "subjects": [{"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": agent_ns}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(AGENT_NAME, agent_ns, owner),
            "rules": [
                # List and watch with fieldSelector metadata.name, which RBAC
                # matches against resourceNames; the agent never gets it by name.
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [CONFIGMAP_NAME],
                 "verbs": ["list", "watch"]},
                # The agent writes its status annotation on its own Pod. RBAC cannot
                # narrow this to "its own pod" (pod names are generated): the
                # grant covers the pods of the agents' namespace, where only
                # agents run, never the operator.
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(AGENT_NAME, agent_ns, owner),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": AGENT_NAME},
            "subjects": [{"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": agent_ns}],
        },
    ]


def _service_monitor(name: str, namespace: str, fleet: model.FleetSpec, owner: dict[str, Any] | None,
                     selector: dict[str, str], target_namespace: str, port: str,
                     **endpoint: Any) -> dict[str, Any]:
    """A ServiceMonitor with the fleet's labels, interval and timeout."""
    sm = fleet.serviceMonitor
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(name, namespace, owner, sm.labels),
        "spec": {
            "selector": {"matchLabels": selector},
            "namespaceSelector": {"matchNames": [target_namespace]},
            "endpoints": [{
                "port": port,
                "path": "/metrics",
                "interval": agentconfig.format_duration(sm.interval),
                "scrapeTimeout": agentconfig.format_duration(sm.scrapeTimeout),
                **endpoint,
            }],
        },
    }


def render_service_monitor(namespace: str, fleet: model.FleetSpec,
                           owner: dict[str, Any] | None) -> dict[str, Any]:
    return _service_monitor(
        AGENT_NAME, namespace, fleet, owner, dict(SELECTOR_LABELS), fleet.agent.namespace, "metrics",
        # The series carry the workload's namespace/pod/container: without
        # this, the target's own labels (the agent pod's) would win and
        # ours would become exported_namespace, exported_pod, ...
        honorLabels=True,
        relabelings=[
            {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "instance"},
            # Which agent answered, beside the workload's pod label.
            {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "agent_pod"},
        ])


def render_network_policy(namespace: str, fleet: model.FleetSpec,
                          owner: dict[str, Any] | None) -> dict[str, Any]:
    """Only the chosen namespaces reach the metrics port; the agent serves
    nothing else. Kubelet probes come from the node, which NetworkPolicy
    implementations let through."""
    np = fleet.networkPolicy
    if np.namespaceSelector is not None:
        namespaces = np.namespaceSelector.model_dump(mode="json", exclude_none=True)
    else:
        namespaces = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                            "values": list(np.namespaces)}]}
    peer: dict[str, Any] = {"namespaceSelector": namespaces}
    if np.podSelector is not None:
        peer["podSelector"] = np.podSelector.model_dump(mode="json", exclude_none=True)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(AGENT_NAME, namespace, owner),
        "spec": {
            "podSelector": {"matchLabels": dict(SELECTOR_LABELS)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [peer], "ports": [{"port": "metrics", "protocol": "TCP"}]}],
        },
    }


OPERATOR_NAME = "kpod-operator"
OPERATOR_METRICS_PORT = "metrics"  # the port name of deploy/operator/service.yaml


def render_operator_service_monitor(namespace: str, fleet: model.FleetSpec,
                                    owner: dict[str, Any] | None) -> dict[str, Any]:
    """Scrapes the operator's own /metrics (every replica: the standby says leader 0)."""
    return _service_monitor(OPERATOR_NAME, namespace, fleet, owner, {APP_LABEL: OPERATOR_NAME}, namespace,
                            OPERATOR_METRICS_PORT)


def load_rule_groups(path: pathlib.Path = RULES_ASSET) -> list[dict[str, Any]]:
    """Groups from the rules asset, or the built-in default while it is
    missing or unreadable (a broken asset must not stop the reconcile)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return copy.deepcopy(DEFAULT_RULE_GROUPS)
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        return copy.deepcopy(DEFAULT_RULE_GROUPS)
    return groups


def load_dashboard(path: pathlib.Path = DASHBOARD_ASSET) -> str | None:
    """The dashboard JSON as shipped (kept byte for byte), None if unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def dashboard_namespace(fleet: model.FleetSpec) -> str | None:
    """Where the dashboard ConfigMap goes; None when it is not wanted."""
    dashboard = fleet.grafana.dashboard
    if not dashboard.enabled:
        return None
    return dashboard.namespace or fleet.agent.namespace


def render_dashboard(namespace: str, fleet: model.FleetSpec, owner: dict[str, Any] | None,
                     dashboard_json: str) -> dict[str, Any]:
    """The dashboard as the ConfigMap the Grafana sidecar loads: its label
    selects it, its folder annotation (when set) files it in a folder. Owned
    by the fleet CR only when beside it in the operator's ``namespace``
    (owner references cannot cross namespaces)."""
    spec = fleet.grafana.dashboard
    target = spec.namespace or fleet.agent.namespace
    meta = _meta(DASHBOARD_NAME, target, owner if target == namespace else None, {spec.label: spec.labelValue})
    if spec.folder is not None:
        meta["annotations"] = {spec.folderAnnotation: spec.folder}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {DASHBOARD_KEY: dashboard_json}}


def dashboard_object(namespace: str) -> dict[str, Any]:
    """Identity of the dashboard ConfigMap in ``namespace`` (for pruning)."""
    return _stub("v1", "ConfigMap", DASHBOARD_NAME, namespace)


def _binding_annotation(binding: dict[str, Any] | None, key: str) -> str | None:
    value = (((binding or {}).get("metadata") or {}).get("annotations") or {}).get(key)
    return value if isinstance(value, str) and value else None


def pending_namespaces(binding: dict[str, Any] | None, key: str) -> tuple[str, ...]:
    """Namespaces the binding's ``key`` annotation lists as still to clean up."""
    return tuple(sorted({ns for ns in (_binding_annotation(binding, key) or "").split(",") if ns}))


def with_pending(binding: dict[str, Any], dashboards: list[str], agents: list[str]) -> dict[str, Any]:
    """The binding recording old locations still to delete (none: the annotations go)."""
    out = copy.deepcopy(binding)
    annotations = out["metadata"].setdefault("annotations", {})
    for key, namespaces in ((PENDING_DASHBOARD_ANNOTATION, dashboards), (PENDING_AGENTS_ANNOTATION, agents)):
        if namespaces:
            annotations[key] = ",".join(sorted(set(namespaces)))
        else:
            annotations.pop(key, None)
    if not annotations:
        del out["metadata"]["annotations"]
    return out


def recorded_dashboard_namespace(binding: dict[str, Any] | None) -> str | None:
    """The namespace of the dashboard our ClusterRoleBinding records, if any."""
    return _binding_annotation(binding, DASHBOARD_NAMESPACE_ANNOTATION)


def render_prometheus_rule(namespace: str, fleet: model.FleetSpec, owner: dict[str, Any] | None,
                           groups: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _meta(AGENT_NAME, namespace, owner, fleet.prometheusRule.labels),
        "spec": {"groups": copy.deepcopy(groups)},
    }


def agent_owner(namespace: str, fleet: model.FleetSpec,
                owner: dict[str, Any] | None) -> dict[str, Any] | None:
    """Owner references cannot cross namespaces: objects in a separate agents'
    namespace are removed by the operator itself (``agent_objects``)."""
    return owner if fleet.agent.namespace == namespace else None


def render_workload(namespace: str, fleet: model.FleetSpec, config: agentconfig.AgentConfig,
                    owner: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Everything the fleet needs regardless of the Prometheus Operator, in
    the agents' namespace (``namespace`` is the operator's)."""
    agent_ns = fleet.agent.namespace
    agent_own = agent_owner(namespace, fleet, owner)
    # ConfigMap first: a node-config edit reaches the agents without waiting
    # for the convergence of the objects that rarely change.
    objects = [
        render_configmap(agent_ns, config, agent_own),
        *render_rbac(namespace, fleet, agent_own),
        render_daemonset(agent_ns, fleet, agent_own),
        render_service(agent_ns, agent_own),
    ]
    if fleet.networkPolicy.enabled:
        objects.append(render_network_policy(agent_ns, fleet, agent_own))
    return objects


def unwanted_workload(fleet: model.FleetSpec) -> list[dict[str, Any]]:
    """Optional workload objects switched off in the spec (to delete if we made them)."""
    if fleet.networkPolicy.enabled:
        return []
    return [_stub("networking.k8s.io/v1", "NetworkPolicy", AGENT_NAME, fleet.agent.namespace)]


def render_monitoring(namespace: str, fleet: model.FleetSpec, owner: dict[str, Any] | None,
                      groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ServiceMonitor / PrometheusRule as enabled; the caller checks the API is served."""
    out = []
    if fleet.serviceMonitor.enabled:
        out.append(render_service_monitor(namespace, fleet, owner))
        out.append(render_operator_service_monitor(namespace, fleet, owner))
    if fleet.prometheusRule.enabled:
        out.append(render_prometheus_rule(namespace, fleet, owner, groups))
    return out


def _stub(api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


def monitoring_objects(namespace: str) -> list[dict[str, Any]]:
    """Identity of every monitoring object the operator may create (for pruning)."""
    return [_stub("monitoring.coreos.com/v1", "ServiceMonitor", AGENT_NAME, namespace),
            _stub("monitoring.coreos.com/v1", "ServiceMonitor", OPERATOR_NAME, namespace),
            _stub("monitoring.coreos.com/v1", "PrometheusRule", AGENT_NAME, namespace)]


def agent_objects(agent_namespace: str) -> list[dict[str, Any]]:
    """Identity of every object the operator may create in the agents'
    namespace, DaemonSet first (its pods stop before their grants go)."""
    return [_stub("apps/v1", "DaemonSet", AGENT_NAME, agent_namespace),
            _stub("v1", "Service", AGENT_NAME, agent_namespace),
            _stub("networking.k8s.io/v1", "NetworkPolicy", AGENT_NAME, agent_namespace),
            _stub("v1", "ConfigMap", CONFIGMAP_NAME, agent_namespace),
            _stub("rbac.authorization.k8s.io/v1", "RoleBinding", AGENT_NAME, agent_namespace),
            _stub("rbac.authorization.k8s.io/v1", "Role", AGENT_NAME, agent_namespace),
            _stub("v1", "ServiceAccount", AGENT_NAME, agent_namespace)]


def bound_agent_namespace(binding: dict[str, Any] | None) -> str | None:
    """The agents' namespace an existing ClusterRoleBinding of ours grants:
    where the agents ran before a namespace change or the fleet's deletion."""
    for subject in ((binding or {}).get("subjects") or []):
        if isinstance(subject, dict) and subject.get("kind") == "ServiceAccount" \
                and subject.get("name") == AGENT_NAME and isinstance(subject.get("namespace"), str):
            return subject["namespace"]
    return None


def cluster_scoped_objects(namespace: str) -> list[dict[str, Any]]:
    """Identity of the cluster-scoped objects of a fleet (no owner reference possible)."""
    name = cluster_role_name(namespace)
    return [_stub("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", name, None),
            _stub("rbac.authorization.k8s.io/v1", "ClusterRole", name, None)]
