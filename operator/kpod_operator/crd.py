"""Generate the KpodMetricsProfile CRD (structural OpenAPI v3) from the pydantic model.

pydantic's own JSON schema uses $ref/anyOf, which structural schemas forbid,
so the models are walked here instead. ``python -m kpod_operator.crd`` prints
the YAML committed as crds/kpodmetricsprofiles.yaml; a test keeps them equal.
"""
from __future__ import annotations

import sys
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kpod_agent import config as agentconfig
from kpod_operator import model

DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(us|ms|s|m|h)?\s*$"

_DESCRIPTIONS = {
    "profile": "Collector set to start from: minimal | standard | comprehensive | custom.",
    "collectors": "Per-collector switches applied on top of the profile.",
    "syscalls": "Syscalls counted by the syscall collector.",
    "podSelector": "Only pods matching this LabelSelector are measured (empty: all).",
    "namespaces": "Fleet only: namespaces measured (include empty = all) and skipped.",
    "includeLabels": "Fleet only: pod labels copied onto series as label_<name>.",
    "histogramBuckets": "Fleet only: range of exposed histogram buckets, in seconds.",
    "agent": "Fleet only: the agent DaemonSet.",
    "serviceMonitor": "Fleet only: Prometheus Operator ServiceMonitor (when its CRD exists).",
    "prometheusRule": "Fleet only: Prometheus Operator PrometheusRule (when its CRD exists).",
    "networkPolicy": "Fleet only: NetworkPolicy letting only these namespaces reach the agents' metrics port.",
}


def _is_duration(metadata: list[Any]) -> bool:
    return any(getattr(m, "func", None) is agentconfig.parse_duration for m in metadata)


def _constraints(metadata: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, annotated_types.MinLen):
            out["minLength"] = item.min_length
        elif isinstance(item, annotated_types.Ge):
            out["minimum"] = item.ge
        elif isinstance(item, FieldInfo):
            out.update(_constraints(item.metadata))
            extra = item.json_schema_extra if isinstance(item.json_schema_extra, dict) else {}
            if extra.get("intOrString"):
                out["x-kubernetes-int-or-string"] = True
            if "pattern" in extra:
                out["pattern"] = extra["pattern"]
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            out["pattern"] = pattern
    return out


def schema_of(annotation: Any, metadata: list[Any] | None = None) -> dict[str, Any]:
    """OpenAPI v3 (structural) schema of one type annotation."""
    metadata = list(metadata or [])
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        inner, *extra = get_args(annotation)
        return schema_of(inner, metadata + extra)
    if _is_duration(metadata):
        return {"x-kubernetes-int-or-string": True, "pattern": DURATION_PATTERN}
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return schema_of(args[0], metadata)
        if set(args) == {str, int}:
            out = {"x-kubernetes-int-or-string": True}
            out.update(_constraints(metadata))
            return out
        raise TypeError(f"cannot map union {annotation!r} to a structural schema")
    if origin is Literal:
        values = list(get_args(annotation))
        return {"type": "string", "enum": values}
    if origin is list:
        (item,) = get_args(annotation)
        return {"type": "array", "items": schema_of(item)}
    if origin is dict:
        key, value = get_args(annotation)
        if value is Any:  # a Kubernetes type passed through (affinity): the API server checks it
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        if get_origin(key) is Literal:
            return {"type": "object",
                    "properties": {k: schema_of(value) for k in get_args(key)}}
        return {"type": "object", "additionalProperties": schema_of(value)}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_schema(annotation)
    simple = {str: "string", int: "integer", bool: "boolean", float: "number"}
    if annotation in simple:
        out: dict[str, Any] = {"type": simple[annotation]}
        out.update(_constraints(metadata))
        return out
    raise TypeError(f"cannot map {annotation!r} to a structural schema")


def _default_of(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is not PydanticUndefined:
        value = info.default
    else:
        return None
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        value = [v.model_dump(mode="json", exclude_none=True) if isinstance(v, BaseModel) else v for v in value]
    if _is_duration(info.metadata) and isinstance(value, (int, float)):
        value = agentconfig.format_duration(value)
    # Empty containers add nothing but noise to `kubectl get -o yaml`.
    if value in ({}, []):
        return None
    return value


def model_schema(cls: type[BaseModel]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, info in cls.model_fields.items():
        prop = schema_of(info.annotation, info.metadata)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        for key in ("pattern", "maxItems"):
            if key in extra:
                prop[key] = extra[key]
        default = _default_of(info)
        if default is not None:
            prop["default"] = default
        if cls is model.ProfileSpec and name in _DESCRIPTIONS:
            prop = {"description": _DESCRIPTIONS[name], **prop}
        properties[name] = prop
        if info.is_required():
            required.append(name)
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    return out


def build_crd() -> dict[str, Any]:
    spec_schema = model_schema(model.ProfileSpec)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{model.PLURAL}.{model.GROUP}"},
        "spec": {
            "group": model.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": model.KIND,
                "listKind": f"{model.KIND}List",
                "plural": model.PLURAL,
                "singular": model.KIND.lower(),
                "shortNames": ["kmp"],
                "categories": ["kpod"],
            },
            "versions": [{
                "name": model.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Profile", "type": "string", "jsonPath": ".spec.profile"},
                    {"name": "Ready", "type": "string",
                     "jsonPath": '.status.conditions[?(@.type=="Available")].status'},
                    {"name": "Applied", "type": "string", "jsonPath": ".status.nodesApplied"},
                    {"name": "Config", "type": "integer", "jsonPath": ".status.configGeneration",
                     "priority": 1},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "Per-pod kernel metrics: the fleet profile (in the operator's "
                                   "namespace) or a namespace override (anywhere else).",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    },
                }},
            }],
        },
    }


def render_yaml() -> str:
    header = "# Generated by `python -m kpod_operator.crd` from kpod_operator.model: do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def main() -> None:
    sys.stdout.write(render_yaml())


if __name__ == "__main__":
    main()
