"""RBAC: nothing granted beyond what the agent and the operator use.

Each side is compared with an explicit table of verbs per resource, written
from what the code calls; the calls themselves are then checked against the
tables, from the source (agent) and from the requests recorded by the
emulated API server (agent API paths and the whole operator under kopf).
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
import threading
import time
from typing import Any

import kubernetes.client
import pytest
import yaml

from kpod_agent import cgroups
from kpod_agent.config import DiscoveryConfig
from kpod_agent.contract import AgentStatus
from kpod_agent.discovery import Discovery
from kpod_agent.kube import ConfigMapSource
from kpod_agent.node_status import PodStatusPublisher
from kpod_operator import kube as kubeapi
from kpod_operator import leader, model, render
from tests.reliability.operator_support import (
    CR_PATH,
    NS,
    REPO,
    TEST_USER_AGENT,
    Attributes,
    FaultyCluster,
    Harness,
    attributes,
    authorized,
    rule_allows,
    verb_table,
    wait_for,
)

AGENT_SOURCES = REPO / "agent" / "kpod_agent"
DEPLOY_RBAC = REPO / "deploy" / "operator" / "rbac.yaml"
CM = render.CONFIGMAP_NAME
AGENTS = model.AgentSpec().namespace  # the agents' namespace, apart from the operator's (NS)
AGENT = render.AGENT_NAME
CLUSTER_NAME = render.cluster_role_name(NS)

# ---- what the agent uses -------------------------------------------------------

# kubernetes client methods the agent calls -> the requests they make.
AGENT_CALLS = {
    # ConfigMapSource: list then watch, both with fieldSelector metadata.name.
    "list_namespaced_config_map": [("list", "core/configmaps", "ns", CM), ("watch", "core/configmaps", "ns", CM)],
    # Informer discovery: list then watch with fieldSelector spec.nodeName.
    "list_pod_for_all_namespaces": [("list", "core/pods", "cluster", None), ("watch", "core/pods", "cluster", None)],
    # Informer discovery: Services of all namespaces (ClusterIPs for the topology).
    "list_service_for_all_namespaces": [("list", "core/services", "cluster", None),
                                        ("watch", "core/services", "cluster", None)],
    # PodStatusPublisher: the status annotation on its own Pod.
    "patch_namespaced_pod": [("patch", "core/pods", "ns", None)],
}

EXPECTED_AGENT = {
    "informer": {
        "ClusterRole": {"core/pods": {"list", "watch"}, "core/services": {"list", "watch"}},
        "Role": {f"core/configmaps#{CM}": {"list", "watch"}, "core/pods": {"patch"}},
    },
    "kubelet": {
        # GET https://<node>:10250/pods: the kubelet authorizes it as nodes/proxy get.
        "ClusterRole": {"core/nodes/proxy": {"get"}},
        "Role": {f"core/configmaps#{CM}": {"list", "watch"}, "core/pods": {"patch"}},
    },
}

# ---- what the operator uses -----------------------------------------------------

# Either called by the operator (handlers, kopf) or held because it grants it to
# the agent: RBAC lets a subject grant only what it holds (no escalate/bind).
# "#name": narrowed to that object; creates cannot be (RBAC sees no name).
EXPECTED_OPERATOR = {
    "ClusterRole": {
        "kpod.io/kpodmetricsprofiles": {"list", "watch", "patch"},  # kopf watch + annotations; handlers list
        "kpod.io/kpodmetricsprofiles/status": {"patch"},
        "apiextensions.k8s.io/customresourcedefinitions": {"list", "watch"},  # kopf's resource scanning
        "core/events": {"create"},  # refusals posted on the CR (and kopf's handler failures)
        # kopf watches with a cluster-wide URL (label selector: the agents'
        # namespace is the CR's); list/watch of pods is also the agent's informer grant.
        "core/pods": {"list", "watch"},
        "apps/daemonsets": {"list", "watch"},
        "core/nodes/proxy": {"get"},  # held for the agent (kubelet mode) only
        "core/services": {"list", "watch"},  # held for the agent's informer (topology) only
        "rbac.authorization.k8s.io/clusterroles": {"create"},
        "rbac.authorization.k8s.io/clusterrolebindings": {"create"},
        f"rbac.authorization.k8s.io/clusterroles#{CLUSTER_NAME}": {"get", "patch", "delete"},
        f"rbac.authorization.k8s.io/clusterrolebindings#{CLUSTER_NAME}": {"get", "patch", "delete"},
    },
    f"Role/{NS}": {  # the operator's namespace: only what the fleet CR owns there
        "monitoring.coreos.com/servicemonitors": {"create"},
        "monitoring.coreos.com/prometheusrules": {"create"},
        f"monitoring.coreos.com/servicemonitors#{AGENT},{render.OPERATOR_NAME}": {"get", "patch", "delete"},
        f"monitoring.coreos.com/prometheusrules#{AGENT}": {"get", "patch", "delete"},
        "coordination.k8s.io/leases": {"create"},  # leader election
        f"coordination.k8s.io/leases#{leader.LEASE_NAME}": {"get", "update"},
    },
    f"Role/{AGENTS}": {  # the agents' namespace
        "core/configmaps": {"create"},
        "core/services": {"create"},
        "core/serviceaccounts": {"create"},
        "apps/daemonsets": {"create"},
        "rbac.authorization.k8s.io/roles": {"create"},
        "rbac.authorization.k8s.io/rolebindings": {"create"},
        "networking.k8s.io/networkpolicies": {"create"},
        f"core/configmaps#{CM}": {"get", "patch", "delete", "list", "watch"},  # list/watch: held for the agent
        f"core/configmaps#{render.DASHBOARD_NAME}": {"get", "patch", "delete"},  # spec.grafana.dashboard
        f"core/services#{AGENT}": {"get", "patch", "delete"},
        f"core/serviceaccounts#{AGENT}": {"get", "patch", "delete"},
        f"apps/daemonsets#{AGENT}": {"get", "patch", "delete"},
        f"rbac.authorization.k8s.io/roles#{AGENT}": {"get", "patch", "delete"},
        f"rbac.authorization.k8s.io/rolebindings#{AGENT}": {"get", "patch", "delete"},
        f"networking.k8s.io/networkpolicies#{AGENT}": {"get", "patch", "delete"},
        "core/pods": {"patch"},  # held for the agent (status annotation)
    },
}
# Granted without being seen in the recorded run, and why.
HELD_FOR_THE_AGENT = {(f"Role/{AGENTS}", f"core/configmaps#{CM}", "list"),
                      (f"Role/{AGENTS}", f"core/configmaps#{CM}", "watch"),
                      (f"Role/{AGENTS}", "core/pods", "patch"), ("ClusterRole", "core/nodes/proxy", "get"),
                      ("ClusterRole", "core/services", "list"), ("ClusterRole", "core/services", "watch")}


def _operator_grants() -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """EXPECTED_OPERATOR as (cluster rules, {namespace: rules})."""
    return (_rules_of(EXPECTED_OPERATOR["ClusterRole"]),
            {table.split("/", 1)[1]: _rules_of(rules) for table, rules in EXPECTED_OPERATOR.items()
             if table.startswith("Role/")})


def _granting_entry(attrs: Attributes) -> tuple[str, str, str] | None:
    """(table, key, verb) of EXPECTED_OPERATOR that allows ``attrs``, the narrowest first."""
    for table, entries in EXPECTED_OPERATOR.items():
        scope = table.split("/", 1)[1] if "/" in table else None
        if scope is not None and attrs.namespace != scope:
            continue
        for key in sorted(entries, key=lambda k: "#" not in k):
            for rule in _rules_of({key: entries[key]}):
                if rule_allows(rule, attrs):
                    return table, key, attrs.verb
    return None


def _agent_rbac(mode: str) -> dict[str, list[dict[str, Any]]]:
    fleet = model.parse_fleet({"agent": {"discovery": {"mode": mode}}})
    return {o["kind"]: o["rules"] for o in render.render_rbac(NS, fleet, None) if o["kind"] in ("ClusterRole", "Role")}


def _rules_of(table: dict[str, set[str]]) -> list[dict[str, Any]]:
    rules = []
    for key, verbs in table.items():
        resource, _, names = key.partition("#")
        group, _, plural = resource.partition("/")
        rule: dict[str, Any] = {"apiGroups": ["" if group == "core" else group], "resources": [plural],
                                "verbs": sorted(verbs)}
        if names:
            rule["resourceNames"] = names.split(",")
        rules.append(rule)
    return rules


@pytest.mark.parametrize("mode", sorted(EXPECTED_AGENT))
def test_agent_rbac_is_the_expected_table(mode: str) -> None:
    rbac = _agent_rbac(mode)
    assert {kind: verb_table(rules) for kind, rules in rbac.items()} == EXPECTED_AGENT[mode]


def test_agent_code_calls_only_the_granted_api_methods() -> None:
    """Every kubernetes client API method named in kpod_agent is one of
    AGENT_CALLS, and every request those make is granted (informer mode)."""
    api_methods = {name for cls in (kubernetes.client.CoreV1Api, kubernetes.client.AppsV1Api,
                                    kubernetes.client.CustomObjectsApi) for name in dir(cls)
                   if not name.startswith("_")}
    named: dict[str, set[str]] = {}
    api_classes: set[str] = set()
    for path in AGENT_SOURCES.rglob("*.py"):
        text = path.read_text()
        for word in set(re.findall(r"\b[a-z_]+\b", text)):
            if word in api_methods and re.search(r"_(namespaced|for_all_namespaces|node|namespace)\w*$|"
                                                 r"^(list|read|patch|create|delete|replace|connect)_", word):
                named.setdefault(word, set()).add(path.name)
        api_classes |= set(re.findall(r"kubernetes\.client\.(\w+Api)\b", text))
    assert set(named) == set(AGENT_CALLS), named
    assert api_classes == {"CoreV1Api"}, api_classes
    # The kubelet is reached by its own URL (kubelet mode), never through the API server's proxy.
    assert "/proxy" not in (AGENT_SOURCES / "discovery.py").read_text()
    rbac = _agent_rbac("informer")
    for method, requests in AGENT_CALLS.items():
        for verb, resource, scope, name in requests:
            group, _, plural = resource.partition("/")
            attrs = Attributes(verb, "" if group == "core" else group, plural,
                               AGENTS if scope == "ns" else None, name)
            assert authorized(attrs, rbac["ClusterRole"], {AGENTS: rbac["Role"]}), (method, verb, resource)
    # ... and nothing granted that no call needs.
    used = {(verb, resource + (f"#{name}" if name else "")) for calls in AGENT_CALLS.values()
            for verb, resource, _, name in calls}
    granted = {(verb, key) for rules in rbac.values() for key, verbs in verb_table(rules).items()
               for verb in verbs}
    assert granted == used


def _agent_requests(cluster: FaultyCluster) -> list[Any]:
    return [r for r in cluster.requests() if r.user_agent == "kpod-agent-rbac-test"]


def test_agent_api_requests_are_all_granted_and_use_every_grant(op_cluster: FaultyCluster,
                                                                tmp_path: pathlib.Path) -> None:
    """The agent's ConfigMap watch, informer and status publisher, run against
    the emulated API server: each request they make is authorized by the
    rendered RBAC, and together they use every verb it grants."""
    h = Harness(op_cluster, tmp_path)
    h.kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CM, "namespace": AGENTS},
                   "data": {"agent.yaml": "generation: 1\n"}})
    h.kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kpod-agent-x", "namespace": AGENTS},
                   "spec": {"nodeName": "node-1", "containers": [{"name": "agent", "image": "a"}]}})
    client = kubeapi.Kube.for_url(op_cluster.url).api
    client.user_agent = "kpod-agent-rbac-test"
    got = threading.Event()
    source = ConfigMapSource(client, AGENTS, CM, lambda data, where: got.set() or True, lambda message: None)
    (tmp_path / "unified").mkdir()
    discovery = Discovery(DiscoveryConfig(mode="informer", interval="100ms"), "node-1",
                          cgroups.CgroupResolver(cgroups.CgroupLayout(unified=tmp_path / "unified")),
                          api_client=client, max_backoff=0.3)
    source.start()
    discovery.start()
    try:
        assert got.wait(10)
        wait_for(lambda: discovery.synced, what="informer synced")
        publisher = PodStatusPublisher(kubernetes.client.CoreV1Api(client), "kpod-agent-x", AGENTS)
        assert publisher.publish(AgentStatus(node="node-1", generation=1))
        wait_for(lambda: sum(r.query.get("watch") == "true" for r in _agent_requests(op_cluster)) >= 3,
                 what="the three watches open")
    finally:
        discovery.stop()
        source.stop()
    rbac = _agent_rbac("informer")
    used: set[tuple[str, str]] = set()
    for r in _agent_requests(op_cluster):
        attrs = attributes(r.method, f"{r.path}?{'&'.join(f'{k}={v}' for k, v in r.query.items())}")
        assert attrs is not None
        assert authorized(attrs, rbac["ClusterRole"], {AGENTS: rbac["Role"]}), attrs
        key = f"{attrs.group or 'core'}/{attrs.resource}" + (f"#{CM}" if attrs.resource == "configmaps" else "")
        used.add((attrs.verb, key))
    granted = {(verb, key) for rules in rbac.values() for key, verbs in verb_table(rules).items()
               for verb in verbs}
    assert used == granted


@pytest.mark.parametrize("mode", sorted(EXPECTED_AGENT))
def test_an_agent_can_never_write_the_operators_pod(mode: str) -> None:
    """The agents' Pod patch grant is in their own namespace, never the operator's."""
    rbac = _agent_rbac(mode)
    assert NS != AGENTS
    for verb in ("patch", "update", "delete", "create"):
        for namespace in (NS, "kube-system"):
            attrs = Attributes(verb, "", "pods", namespace, "kpod-operator-5d9c7b-x2x4q")
            assert not authorized(attrs, rbac["ClusterRole"], {AGENTS: rbac["Role"]}), (verb, namespace)
    assert authorized(Attributes("patch", "", "pods", AGENTS, "kpod-agent-x"), rbac["ClusterRole"],
                      {AGENTS: rbac["Role"]})


def test_operator_requests_are_covered_by_the_expected_table(op_harness: Harness) -> None:
    """The operator under kopf through its whole life (fleet, override, DaemonSet
    status, Prometheus Operator CRDs appearing, hand edits repaired, monitoring
    switched off, a bad spec, the fleet deleted): every request is authorized by
    EXPECTED_OPERATOR, and every grant there was used or is held for the agent."""
    h = op_harness
    h.start()
    h.fleet_ready()
    h.apply_cr("team-a", "metrics", {"profile": "minimal"})
    wait_for(lambda: h.reason("metrics", "Reconciled", "team-a") == "True/Merged", what="override")
    h.write_ds_status(desiredNumberScheduled=1, updatedNumberScheduled=1, numberAvailable=1, numberReady=1)
    h.apply_cr(NS, "default", {"networkPolicy": {"enabled": True}, "grafana": {"dashboard": {"enabled": True}}})
    wait_for(lambda: h.cluster.objects("networkpolicies"), what="NetworkPolicy")
    wait_for(lambda: h.get(f"/api/v1/namespaces/{AGENTS}/configmaps/{render.DASHBOARD_NAME}"), what="dashboard")
    h.cluster.install_monitoring()
    wait_for(lambda: h.cluster.objects("servicemonitors") and h.cluster.objects("prometheusrules"),
             what="monitoring objects")
    # Hand edits of every object: the operator patches them back (drift repair).
    drifted = []
    fleet = model.parse_fleet({"networkPolicy": {"enabled": True}, "grafana": {"dashboard": {"enabled": True}}})
    for obj in render.render_workload(NS, fleet, render.render_agent_config(fleet, {}, 1), None) \
            + render.monitoring_objects(NS) + [render.render_dashboard(NS, fleet, None, "{}")]:
        if obj["metadata"]["name"] == CM:
            continue
        path = kubeapi.object_path(obj)
        h.kube.merge_patch(path, {"metadata": {"labels": {"app.kubernetes.io/part-of": "tampered"}}})
        drifted.append(path)
    wait_for(lambda: all(h.get(p)["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kpod-metrics"
                         for p in drifted), what="drift repaired")
    h.apply_cr(NS, "default", {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False},
                               "networkPolicy": {"enabled": False}, "grafana": {"dashboard": {"enabled": False}}})
    wait_for(lambda: not h.cluster.objects("servicemonitors") and not h.cluster.objects("prometheusrules")
             and not h.cluster.objects("networkpolicies")
             and not h.get(f"/api/v1/namespaces/{AGENTS}/configmaps/{render.DASHBOARD_NAME}"),
             what="monitoring objects, NetworkPolicy, dashboard deleted")
    h.apply_cr(NS, "default", {"profile": "nonsense"})
    wait_for(lambda: h.reason("default", "Reconciled") == "False/InvalidSpec", what="invalid spec")
    h.kube.request("DELETE", f"{CR_PATH}/namespaces/{NS}/kpodmetricsprofiles/default")
    wait_for(lambda: h.get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/kpod-agent-{NS}") is None
             and not h.cluster.objects("daemonsets"), what="agents and cluster-scoped RBAC deleted")
    time.sleep(0.3)
    h.stop()

    cluster_rules, ns_rules = _operator_grants()
    used: set[tuple[str, str, str]] = set()
    for r in h.cluster.requests():
        if r.user_agent == TEST_USER_AGENT:
            continue
        attrs = attributes(r.method, f"{r.path}?{'&'.join(f'{k}={v}' for k, v in r.query.items())}")
        if attrs is None:
            continue  # discovery: granted to every authenticated user
        # A server-side apply that creates the object is authorized as patch and create.
        for a in [attrs] + ([dataclasses.replace(attrs, verb="create")]
                           if r.method == "PATCH" and r.status == 201 else []):
            assert authorized(a, cluster_rules, ns_rules), (a.verb, r.method, r.path, r.query)
            entry = _granting_entry(a)
            assert entry is not None, a
            used.add(entry)
    granted = {(kind, key, verb) for kind, table in EXPECTED_OPERATOR.items()
               for key, verbs in table.items() for verb in verbs}
    assert granted - used - HELD_FOR_THE_AGENT == set()


def test_operator_holds_every_grant_it_gives_the_agent() -> None:
    """RBAC refuses to create a role granting more than its creator holds."""
    cluster_rules, ns_rules = _operator_grants()
    for mode in EXPECTED_AGENT:
        for kind, table in EXPECTED_AGENT[mode].items():
            for key, verbs in table.items():
                resource, _, name = key.partition("#")
                group, _, plural = resource.partition("/")
                for verb in verbs:
                    attrs = Attributes(verb, "" if group == "core" else group, plural,
                                           AGENTS if kind == "Role" else None, name or None)
                    assert authorized(attrs, cluster_rules, ns_rules), (mode, kind, key, verb)


def _deploy_tables() -> dict[str, dict[str, set[str]]]:
    docs = [d for d in yaml.safe_load_all(DEPLOY_RBAC.read_text()) if d]
    return {d["kind"] + (f"/{d['metadata']['namespace']}" if d["kind"] == "Role" else ""): verb_table(d["rules"])
            for d in docs if d["kind"] in ("ClusterRole", "Role")}


def test_deployed_operator_rbac_is_the_expected_table() -> None:
    assert _deploy_tables() == EXPECTED_OPERATOR
