"""deploy/: valid Kubernetes objects, and RBAC that lets the operator do its job."""
from __future__ import annotations

import pathlib
from typing import Any

import kubernetes_validate
import yaml

from kpod_operator import kube as kubeapi
from kpod_operator import model, render
from tests.reliability.operator_support import Attributes, authorized

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _docs(*paths: pathlib.Path) -> list[dict[str, Any]]:
    return [d for p in paths for d in yaml.safe_load_all(p.read_text()) if d]


def test_kustomization_lists_existing_files() -> None:
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for entry in kust["resources"]:
        target = (DEPLOY / entry).resolve()
        assert target.exists(), entry
        if target.is_dir():
            assert (target / "kustomization.yaml").exists(), entry
        else:
            # kustomize refuses files outside the kustomization root.
            assert DEPLOY.resolve() in target.parents, entry


def test_deploy_manifests_validate_against_kubernetes_schemas() -> None:
    docs = _docs(DEPLOY / "namespace.yaml", *sorted((DEPLOY / "operator").glob("*.yaml")))
    assert {d["kind"] for d in docs} >= {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                         "Role", "RoleBinding", "Deployment"}
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def _deploy_grants() -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The operator's ClusterRole rules, and its Roles' rules by namespace."""
    docs = _docs(*sorted((DEPLOY / "operator").glob("*.yaml")))
    cluster_rules = next(d for d in docs if d["kind"] == "ClusterRole")["rules"]
    ns_rules: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        if doc["kind"] == "Role":
            ns_rules.setdefault(doc["metadata"]["namespace"], []).extend(doc["rules"])
    return cluster_rules, ns_rules


def _allowed(verb: str, group: str, resource: str, namespace: str | None, name: str | None) -> bool:
    cluster_rules, ns_rules = _deploy_grants()
    return authorized(Attributes(verb, group, resource, namespace, name), cluster_rules, ns_rules)


def test_operator_holds_every_permission_it_grants_the_agent() -> None:
    """RBAC forbids granting what one does not hold (escalation check)."""
    for mode in ("informer", "kubelet"):
        fleet = model.parse_fleet({"agent": {"discovery": {"mode": mode}}})
        for obj in render.render_rbac("kpod-system", fleet, None):
            if obj["kind"] not in ("ClusterRole", "Role"):
                continue
            namespace = obj["metadata"].get("namespace")
            for rule in obj["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            for name in rule.get("resourceNames") or [None]:
                                assert _allowed(verb, group, resource, namespace, name), \
                                    (obj["kind"], resource, verb)


def test_operator_can_write_what_it_renders() -> None:
    fleet = model.parse_fleet({"networkPolicy": {"enabled": True}})
    objs = render.render_workload("kpod-system", fleet, render.render_agent_config(fleet, {}, 1), None) + \
        render.render_monitoring("kpod-system", fleet, None, render.DEFAULT_RULE_GROUPS)
    for obj in objs:
        group = obj["apiVersion"].rsplit("/", 1)[0] if "/" in obj["apiVersion"] else ""
        meta = obj["metadata"]
        plural = kubeapi.collection_path(obj["apiVersion"], obj["kind"], None).rsplit("/", 1)[1]
        assert _allowed("create", group, plural, meta.get("namespace"), None), obj["kind"]
        for verb in ("get", "patch", "delete"):
            assert _allowed(verb, group, plural, meta.get("namespace"), meta["name"]), (obj["kind"], verb)
        # ... and nothing of the same kind under another name.
        assert not _allowed("delete", group, plural, meta.get("namespace"), "someone-elses"), obj["kind"]
    # Not a single object in the operator's own namespace but the monitoring ones.
    assert not _allowed("patch", "", "pods", "kpod-system", "kpod-operator-abc")
    assert not _allowed("patch", "apps", "deployments", "kpod-system", "kpod-operator")
    for verb in ("list", "watch", "patch"):  # the operator never GETs a single CR
        assert _allowed(verb, "kpod.io", "kpodmetricsprofiles", None, None)
    assert _allowed("patch", "kpod.io", "kpodmetricsprofiles/status", "team-a", "x")


def test_operator_replicas_prefer_different_nodes() -> None:
    """Two replicas on one node would both go in a drain of it: the standby's
    anti-affinity must select the operator's own pods, per node."""
    deployment = next(d for d in _docs(*sorted((DEPLOY / "operator").glob("*.yaml"))) if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    terms = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
               and t["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
               for t in terms)
