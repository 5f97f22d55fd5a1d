"""The CRD: generated from the pydantic model, structural, and in step with it."""
from __future__ import annotations

import pathlib
from typing import Any

import jsonschema
import pytest
import yaml

from kpod_operator import crd, model

from .schemas import crd_validator, to_json_schema, walk

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "kpodmetricsprofiles.yaml"
SAMPLES = ROOT / "deploy" / "samples"


def test_committed_crd_is_the_generated_one() -> None:
    assert CRD_FILE.read_text() == crd.render_yaml(), \
        "crds/kpodmetricsprofiles.yaml is stale: run python -m kpod_operator.crd > crds/kpodmetricsprofiles.yaml"


def test_crd_is_structural() -> None:
    """Every node has a type (or is int-or-string / preserve-unknown), and
    properties never sit beside additionalProperties: the API server's rules."""
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema):
        assert "type" in node or node.get("x-kubernetes-int-or-string") or \
            node.get("x-kubernetes-preserve-unknown-fields"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "$ref" not in node and "anyOf" not in node, path


def test_defaults_validate_against_their_own_schema() -> None:
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    checked = 0
    for path, node in walk(schema):
        if "default" in node:
            jsonschema.validate(node["default"], to_json_schema(node)), path
            checked += 1
    assert checked >= 10


def test_crd_names_scope_status_and_columns() -> None:
    spec = crd.build_crd()["spec"]
    assert spec["names"]["shortNames"] == ["kmp"]
    assert spec["scope"] == "Namespaced"
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Profile", "Ready", "Age"} <= columns
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True


def test_override_fields_have_no_defaults() -> None:
    """A default on profile/syscalls/podSelector would make every override
    replace the fleet's value: they must stay unset unless written."""
    props = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for name in ("profile", "syscalls", "podSelector", "collectors"):
        assert "default" not in props[name], name


VALID = [
    {},
    {"profile": "comprehensive"},
    {"profile": "custom", "collectors": {"cpu": {"enabled": True, "interval": "5s"}, "tcpdrop": {"enabled": False}}},
    {"syscalls": ["read", "write"], "podSelector": {"matchLabels": {"app": "web"},
                                                     "matchExpressions": [{"key": "tier", "operator": "NotIn",
                                                                           "values": ["db"]}]}},
    {"namespaces": {"include": [], "exclude": ["kube-system"]}, "includeLabels": ["app"]},
    {"histogramBuckets": {"min": "1us", "max": "10s"}},
    {"agent": {"image": "reg/kpod-agent:1", "imagePullPolicy": "Always",
               "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
               "nodeSelector": {"kubernetes.io/os": "linux"},
               "tolerations": [{"operator": "Exists"}], "priorityClassName": "system-node-critical",
               "updateStrategy": {"maxUnavailable": "10%"}, "discovery": {"mode": "kubelet"}}},
    {"agent": {"updateStrategy": {"maxUnavailable": 2}, "resources": {"requests": {"cpu": 1}}}},
    {"serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "5s", "labels": {"release": "prom"}},
     "prometheusRule": {"enabled": False}},
]

INVALID = [
    {"profile": "huge"},
    {"collectors": {"cpu": {"interval": "soon"}}},
    {"collectors": {"gpu": {"enabled": True}}},
    {"agent": {"imagePullPolicy": "Sometimes"}},
    {"agent": {"resources": {"requests": {"cpu": "lots"}}}},
    {"agent": {"updateStrategy": {"maxUnavailable": "ten"}}},
    {"agent": {"tolerations": [{"operator": "Maybe"}]}},
    {"agent": {"discovery": {"mode": "none"}}},
    {"agent": {"image": "has space"}},
    {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Like"}]}},
    {"serviceMonitor": {"interval": "often"}},
    {"unknownField": 1},
    {"syscalls": "read"},
]


@pytest.mark.parametrize("spec", VALID)
def test_valid_specs_pass_both_schema_and_model(spec: dict[str, Any]) -> None:
    validator = crd_validator(crd.build_crd())
    errors = list(validator.iter_errors({"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile",
                                         "metadata": {}, "spec": spec}))
    assert errors == []
    model.parse_spec(spec)


@pytest.mark.parametrize("spec", INVALID)
def test_invalid_specs_fail_both_schema_and_model(spec: dict[str, Any]) -> None:
    validator = crd_validator(crd.build_crd())
    errors = list(validator.iter_errors({"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile",
                                         "metadata": {}, "spec": spec}))
    assert errors, "the CRD schema accepts what the model rejects"
    with pytest.raises(model.SpecError):
        model.parse_spec(spec)


def test_sample_crs_are_valid() -> None:
    docs = [d for f in sorted(SAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    assert len(docs) >= 2
    validator = crd_validator(crd.build_crd())
    for doc in docs:
        assert list(validator.iter_errors(doc)) == [], doc["metadata"]
        if doc["metadata"]["namespace"] == "kpod-system":
            model.parse_fleet(doc["spec"])
        else:
            model.parse_override(doc["spec"])


def test_crd_file_is_valid_kubernetes() -> None:
    import kubernetes_validate
    doc = yaml.safe_load(CRD_FILE.read_text())
    kubernetes_validate.validate(doc, "1.30.0", strict=True)
