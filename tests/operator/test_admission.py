"""Admission == model, case by case: what the API server refuses with the
generated CRD (defaults, openAPIV3Schema through jsonschema, CEL rules through
cel-python) is exactly what the operator's model refuses, on the same specs."""
from __future__ import annotations

from typing import Any

import pytest

from kpod_operator import crd, model

from .schemas import admission_errors

CRD = crd.build_crd()

# (id, spec, model accepts it?)
CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("empty", {}, True),
    ("servicemonitor-valid", {"serviceMonitor": {"interval": "1m30s", "scrapeTimeout": "45s"}}, True),
    ("servicemonitor-interval-250us", {"serviceMonitor": {"interval": "250us"}}, False),
    ("servicemonitor-interval-decimal", {"serviceMonitor": {"interval": "1.5s"}}, False),
    ("servicemonitor-interval-number", {"serviceMonitor": {"interval": 30}}, False),
    ("servicemonitor-interval-0s", {"serviceMonitor": {"interval": "0s", "scrapeTimeout": "0s"}}, False),
    ("servicemonitor-timeout-above-interval", {"serviceMonitor": {"interval": "10s", "scrapeTimeout": "30s"}},
     False),
    ("servicemonitor-default-timeout-above-interval", {"serviceMonitor": {"interval": "5s"}}, False),
    ("servicemonitor-timeout-equal-interval", {"serviceMonitor": {"interval": "10s", "scrapeTimeout": "10s"}},
     True),
    ("buckets-valid", {"histogramBuckets": {"min": "10us", "max": "2s"}}, True),
    ("max-cgroups-valid", {"maxCgroups": 16384}, True),
    ("max-cgroups-too-small", {"maxCgroups": 32}, False),
    ("max-cgroups-string", {"maxCgroups": "4096"}, False),
    ("buckets-min-above-max", {"histogramBuckets": {"min": "10s", "max": "1s"}}, False),
    ("buckets-min-equal-max", {"histogramBuckets": {"min": "1s", "max": 1}}, False),
    ("buckets-min-above-default-max", {"histogramBuckets": {"min": "20s"}}, False),
    ("syscalls-known", {"syscalls": ["read", "getppid", "clone3"]}, True),
    ("syscalls-unknown-name", {"syscalls": ["read", "no_such_call"]}, False),
    ("latency-on-syscall", {"collectors": {"syscall": {"latency": True}}}, True),
    ("latency-on-cpu", {"collectors": {"cpu": {"latency": True}}}, False),
    ("latency-on-memory-false", {"collectors": {"memory": {"latency": False}}}, False),
    ("interval-0s", {"collectors": {"cpu": {"interval": "0s"}}}, False),
    ("interval-minus-5", {"collectors": {"cpu": {"interval": -5}}}, False),
    ("interval-minus-5-string", {"collectors": {"cpu": {"interval": "-5"}}}, False),
    ("interval-1e-10s", {"collectors": {"cpu": {"interval": "0.0000000001s"}}}, False),
    ("interval-1us", {"collectors": {"cpu": {"interval": "1us"}}}, False),
    ("interval-100ms", {"collectors": {"cpu": {"interval": "100ms"}}}, True),
    ("interval-bare-number-string", {"collectors": {"cpu": {"interval": "15"}}}, True),
    ("interval-integer", {"collectors": {"cpu": {"interval": 15}}}, True),
    ("interval-8-days", {"collectors": {"cpu": {"interval": "192h"}}}, False),
    ("interval-with-space", {"collectors": {"cpu": {"interval": "15 s"}}}, False),
    ("selector-in-without-values",
     {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}}, False),
    ("selector-notin-empty-values",
     {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": []}]}}, False),
    ("selector-exists-with-values",
     {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists", "values": ["db"]}]}}, False),
    ("selector-exists", {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}}, True),
    ("selector-in", {"podSelector": {"matchExpressions": [{"key": "t", "operator": "In", "values": ["a"]}]}}, True),
    ("enabled-string", {"collectors": {"cpu": {"enabled": "yes"}}}, False),
    ("policy-valid", {"overridePolicy": {"allowedProfiles": ["minimal"], "maxSyscalls": 8, "minInterval": "30s",
                                         "allowLatency": True}}, True),
    ("policy-max-syscalls-string", {"overridePolicy": {"maxSyscalls": "8"}}, False),
    ("policy-max-syscalls-negative", {"overridePolicy": {"maxSyscalls": -1}}, False),
    ("policy-unknown-profile", {"overridePolicy": {"allowedProfiles": ["everything"]}}, False),
    ("policy-min-interval-0s", {"overridePolicy": {"minInterval": "0s"}}, False),
    ("grafana-dashboard-valid", {"grafana": {"dashboard": {
        "enabled": True, "namespace": "monitoring", "label": "example.com/grafana_dashboard", "labelValue": "",
        "folder": "Kernel / kpod", "folderAnnotation": "grafana_folder"}}}, True),
    ("grafana-label-with-space", {"grafana": {"dashboard": {"label": "grafana dashboard"}}}, False),
    ("grafana-label-two-slashes", {"grafana": {"dashboard": {"label": "a/b/c"}}}, False),
    ("grafana-label-empty", {"grafana": {"dashboard": {"label": ""}}}, False),
    ("grafana-label-name-64-chars", {"grafana": {"dashboard": {"label": "a" * 64}}}, False),
    ("grafana-label-value-dash-first", {"grafana": {"dashboard": {"labelValue": "-1"}}}, False),
    ("grafana-label-value-number", {"grafana": {"dashboard": {"labelValue": 1}}}, False),
    ("grafana-folder-annotation-bad", {"grafana": {"dashboard": {"folderAnnotation": "folder!"}}}, False),
    ("grafana-folder-empty", {"grafana": {"dashboard": {"folder": ""}}}, False),
    ("grafana-namespace-uppercase", {"grafana": {"dashboard": {"namespace": "Monitoring"}}}, False),
    ("grafana-unknown-field", {"grafana": {"dashboards": {}}}, False),
    ("otlp-valid", {"otlp": {"enabled": True, "endpoint": "https://otel.example:4318/v1/metrics",
                             "headersSecretRef": {"name": "otlp-auth", "key": "headers"}, "interval": "30s"}}, True),
    ("otlp-off-without-endpoint", {"otlp": {"enabled": False}}, True),
    ("otlp-on-without-endpoint", {"otlp": {"enabled": True}}, False),
    ("otlp-endpoint-not-http", {"otlp": {"endpoint": "grpc://otel:4317"}}, False),
    ("otlp-endpoint-with-space", {"otlp": {"endpoint": "http://otel 4318"}}, False),
    ("otlp-interval-1ms", {"otlp": {"interval": "1ms"}}, False),
    ("otlp-secret-name-uppercase", {"otlp": {"headersSecretRef": {"name": "Auth"}}}, False),
    ("otlp-secret-key-slash", {"otlp": {"headersSecretRef": {"name": "a", "key": "a/b"}}}, False),
    ("otlp-secret-without-name", {"otlp": {"headersSecretRef": {"key": "h"}}}, False),
    ("otlp-headers-in-clear", {"otlp": {"headers": {"x-api-key": "k"}}}, False),
]


def _admitted(spec: dict[str, Any]) -> list[str]:
    return admission_errors(CRD, {"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile",
                                  "metadata": {"name": "x", "namespace": "x"}, "spec": spec})


def _model_accepts(spec: dict[str, Any]) -> bool:
    try:
        model.parse_fleet(spec)
    except model.SpecError:
        return False
    return True


@pytest.mark.parametrize("spec,accepted", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_admission_verdict_is_the_model_verdict(spec: dict[str, Any], accepted: bool) -> None:
    assert _model_accepts(spec) == accepted
    errors = _admitted(spec)
    assert (errors == []) == accepted, errors


def test_every_cel_rule_compiles_and_has_a_message() -> None:
    import celpy

    from .schemas import walk
    schema = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = [r for _, node in walk(schema) for r in node.get("x-kubernetes-validations") or []]
    assert len(rules) >= 4
    for rule in rules:
        celpy.Environment().compile(rule["rule"])
        assert rule["message"]


def test_every_spec_and_status_field_is_described() -> None:
    """`kubectl explain` has something to say for each field."""
    from .schemas import walk
    schema = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = []
    for root in ("spec", "status"):
        for path, node in walk(schema["properties"][root], root):
            if path.endswith(("[]", "{}")):
                continue  # list items and map values: described by their field
            if not node.get("description"):
                missing.append(path)
    assert missing == []


def test_printer_columns_show_the_state_of_an_override() -> None:
    columns = {c["name"]: c for c in CRD["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["State"]["jsonPath"] == '.status.conditions[?(@.type=="Reconciled")].reason'
    assert columns["Message"]["jsonPath"] == '.status.conditions[?(@.type=="Reconciled")].message'


def test_status_written_by_the_operator_fits_the_typed_status_schema() -> None:
    import datetime

    from kpod_operator import status
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    fleet = status.build_status(None, observed_generation=3, reconcile=status.ReconcileOutcome(True, "Reconciled", "x"),
                                config_generation=7, ds=None, reports=[], now=now, stuck_after=60)
    override = status.conflict_status(None, 1, status.ReconcileOutcome(False, "OverBudget", "y"), now)
    for st in (fleet, override):
        model.ProfileStatus.model_validate(st)
        assert _admitted_status(st) == []


def _admitted_status(st: dict[str, Any]) -> list[str]:
    return admission_errors(CRD, {"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile",
                                  "metadata": {"name": "x", "namespace": "x"}, "spec": {}, "status": st})
