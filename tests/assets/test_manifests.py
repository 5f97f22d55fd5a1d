"""Manifests the cluster receives: deploy/ (kustomize), its samples, the e2e
workloads and override, and the PrometheusRule the operator builds from our
rules. Built-in kinds are checked against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict); custom resources against their CRDs.
`kubectl apply --dry-run=client` needs an API server for its REST mapping,
so it runs in the kind e2e only."""

from __future__ import annotations

import pathlib

import kubernetes_validate
import pytest
import yaml

from kpod_operator import model, render
from tests.assets.tools import REPO, run, tool
from tests.operator import schemas

K8S_VERSION = "1.33.0"  # within kind's and kubernetes-validate's supported range
KPOD_CRD = yaml.safe_load((REPO / "crds/kpodmetricsprofiles.yaml").read_text())


def docs(path: pathlib.Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomize_deploy() -> list[dict]:
    out = run(tool("kubectl"), "kustomize", REPO / "deploy")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate(doc: dict) -> None:
    """Strict schema validation; custom resources of ours against our CRD."""
    if doc["apiVersion"].startswith("kpod.io/"):
        errors = [e.message for e in schemas.crd_validator(KPOD_CRD).iter_errors(doc)]
        assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: {errors}"
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{doc['kind']}/{doc['metadata'].get('name')}: {e.message} at {list(e.path)}", pytrace=False)


def test_deploy_kustomization_renders_crd_rbac_and_operator():
    rendered = kustomize_deploy()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    assert ("CustomResourceDefinition", "kpodmetricsprofiles.kpod.io") in kinds
    assert {"ServiceAccount", "Deployment"} <= {k for k, _ in kinds}
    assert {"ClusterRole", "ClusterRoleBinding"} & {k for k, _ in kinds}
    deployment = next(d for d in rendered if d["kind"] == "Deployment")
    images = [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert images == ["kpod-operator:dev"]


@pytest.mark.parametrize("doc", kustomize_deploy() if (REPO / "deploy/kustomization.yaml").exists() else [],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_deploy_objects_match_the_kubernetes_schemas(doc):
    validate(doc)


SAMPLES = sorted((REPO / "deploy/samples").glob("*.yaml"))


def test_there_is_a_fleet_and_an_override_sample():
    crs = [d for p in SAMPLES for d in docs(p)]
    namespaces = {d["metadata"]["namespace"] for d in crs if d["kind"] == "KpodMetricsProfile"}
    assert "kpod-system" in namespaces and namespaces - {"kpod-system"}


@pytest.mark.parametrize(
    "path",
    SAMPLES + [REPO / "e2e/manifests/override.yaml", REPO / "e2e/manifests/workloads.yaml"],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_samples_and_e2e_manifests_are_valid(path):
    for doc in docs(path):
        validate(doc)


def test_strict_validation_catches_a_typo():
    bad = docs(REPO / "e2e/manifests/workloads.yaml")[4]
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy "] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    override = docs(REPO / "e2e/manifests/override.yaml")[0]
    override["spec"]["collectors"]["syscall"]["enabled"] = "yes"
    assert list(schemas.crd_validator(KPOD_CRD).iter_errors(override))


def test_e2e_override_is_a_valid_override_for_the_operator():
    override = model.parse_override(docs(REPO / "e2e/manifests/override.yaml")[0]["spec"])
    assert override.collectors["syscall"].enabled
    assert list(override.syscalls) == ["getppid", "openat"]


def test_kind_config_mounts_the_host_headers_into_every_node():
    config = yaml.safe_load((REPO / "e2e/kind-config.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert len(config["nodes"]) >= 2
    for node in config["nodes"]:
        mounts = {m["containerPath"]: m["hostPath"] for m in node["extraMounts"]}
        assert mounts == {"/lib/modules": "/lib/modules", "/usr/src": "/usr/src"}


def test_the_operator_wraps_our_rules_into_a_valid_prometheusrule():
    groups = render.load_rule_groups()
    ours = yaml.safe_load((REPO / "operator/kpod_operator/assets/prometheus-rules.yaml").read_text())["groups"]
    assert groups == ours, "the operator did not load operator/kpod_operator/assets/prometheus-rules.yaml"
    fleet = model.parse_fleet(docs(REPO / "deploy/samples/fleet.yaml")[0]["spec"])
    rule = render.render_prometheus_rule("kpod-system", fleet, None, groups)
    crd = schemas.fixture_crd("monitoring.coreos.com_prometheusrules.yaml")
    errors = [f"{list(e.path)}: {e.message}" for e in schemas.crd_validator(crd).iter_errors(rule)]
    assert not errors


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch, as `kubectl patch --type merge` applies it."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def test_e2e_fleet_patch_yields_a_valid_fleet_in_the_state_the_suite_expects():
    sample = next(d for p in SAMPLES for d in docs(p) if d["metadata"]["namespace"] == "kpod-system")
    patched = merge_patch(sample, yaml.safe_load((REPO / "e2e/manifests/fleet-patch.yaml").read_text()))
    validate(patched)
    fleet = model.parse_fleet(patched["spec"])
    assert fleet.agent.image == "kpod-agent:dev"
    # expectations.yaml wants no syscall series outside the override's namespace.
    assert patched["spec"]["collectors"]["syscall"]["enabled"] is False
    for later in (
        {"spec": {"collectors": {"execsnoop": {"enabled": True}}}},
        {"spec": {"agent": {"image": "kpod-agent:e2e-rollout"}}},
    ):
        patched = merge_patch(patched, later)
        validate(patched)
        model.parse_fleet(patched["spec"])
