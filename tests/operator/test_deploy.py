"""deploy/: valid Kubernetes objects, and RBAC that lets the operator do its job."""
from __future__ import annotations

import pathlib
from typing import Any

import kubernetes_validate
import yaml

from kpod_operator import model, render

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


def _allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(group in r.get("apiGroups", []) and resource in r.get("resources", [])
               and verb in r.get("verbs", []) and not r.get("resourceNames") for r in rules)


def test_operator_holds_every_permission_it_grants_the_agent() -> None:
    """RBAC forbids granting what one does not hold (escalation check)."""
    docs = _docs(*sorted((DEPLOY / "operator").glob("*.yaml")))
    cluster_rules = next(d for d in docs if d["kind"] == "ClusterRole")["rules"]
    ns_rules = next(d for d in docs if d["kind"] == "Role")["rules"]
    for mode in ("informer", "kubelet"):
        fleet = model.parse_fleet({"agent": {"discovery": {"mode": mode}}})
        for obj in render.render_rbac("kpod-system", fleet, None):
            if obj["kind"] not in ("ClusterRole", "Role"):
                continue
            held = cluster_rules if obj["kind"] == "ClusterRole" else cluster_rules + ns_rules
            for rule in obj["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            assert _allows(held, group, resource, verb), (obj["kind"], resource, verb)


def test_operator_can_write_what_it_renders() -> None:
    docs = _docs(*sorted((DEPLOY / "operator").glob("*.yaml")))
    rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
    fleet = model.parse_fleet({})
    objs = render.render_workload("kpod-system", fleet, render.render_agent_config(fleet, {}, 1), None) + \
        render.render_monitoring("kpod-system", fleet, None, render.DEFAULT_RULE_GROUPS)
    plural = {"ServiceAccount": "serviceaccounts", "ClusterRole": "clusterroles", "Role": "roles",
              "ClusterRoleBinding": "clusterrolebindings", "RoleBinding": "rolebindings",
              "ConfigMap": "configmaps", "DaemonSet": "daemonsets", "Service": "services",
              "ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules"}
    for obj in objs:
        group = obj["apiVersion"].rsplit("/", 1)[0] if "/" in obj["apiVersion"] else ""
        for verb in ("get", "create", "patch"):
            assert _allows(rules, group, plural[obj["kind"]], verb), (obj["kind"], verb)
    for verb in ("list", "watch", "patch"):  # the operator never GETs a single CR
        assert _allows(rules, "kpod.io", "kpodmetricsprofiles", verb)
    assert _allows(rules, "kpod.io", "kpodmetricsprofiles/status", "patch")
