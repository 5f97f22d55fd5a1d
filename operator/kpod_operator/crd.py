"""Generate the KpodMetricsProfile CRD (structural OpenAPI v3) from the pydantic model.

pydantic's own JSON schema uses $ref/anyOf, which structural schemas forbid,
so the models are walked here instead. Descriptions are the models' field
descriptions (what `kubectl explain` prints); the rules the models check
across fields are written out as CEL (``x-kubernetes-validations``) so the
API server refuses a bad spec at admission. ``python -m kpod_operator.crd``
prints the YAML committed as crds/kpodmetricsprofiles.yaml; a test keeps
them equal, and another evaluates every CEL rule on the model's own cases.
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

# The agent's duration text (no spaces: CEL's duration() does not take them).
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(us|ms|s|m|h)?$"
DURATION_MAX_LENGTH = 32


def cel_seconds(expr: str) -> str:
    """CEL: an int-or-string duration field as a CEL duration (a bare number is seconds)."""
    return (f"(type({expr}) == int ? duration(string({expr}) + 's') : "
            f"({expr}.matches('^[0-9]+(\\\\.[0-9]+)?$') ? duration({expr} + 's') : duration({expr})))")


def _cel_duration(text: float) -> str:
    return f"duration('{agentconfig.format_duration(text)}')"


def _bounds_rule(expr: str, bounds: agentconfig.Bounds) -> dict[str, str]:
    low = max(bounds.min, agentconfig.DURATION_RESOLUTION_SECONDS)
    return {
        "rule": f"{expr} >= {_cel_duration(low)} && {expr} <= {_cel_duration(bounds.max)}",
        "message": f"must be between {agentconfig.format_duration(low)} and "
                   f"{agentconfig.format_duration(bounds.max)}",
    }


# Cross-field rules, each the CEL twin of a model validator.
_RULES: dict[type[BaseModel], list[dict[str, str]]] = {
    agentconfig.LabelSelectorRequirement: [{
        "rule": "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) "
                ": (!has(self.values) || size(self.values) == 0)",
        "message": "In and NotIn need a non-empty values list; Exists and DoesNotExist take no values",
    }],
    agentconfig.HistogramBuckets: [{
        "rule": f"{cel_seconds('self.min')} < {cel_seconds('self.max')}",
        "message": "histogramBuckets.min must be below histogramBuckets.max",
    }],
    model.ProfileSpec: [{
        "rule": "!has(self.serviceMonitor) || "
                "duration(self.serviceMonitor.scrapeTimeout) <= duration(self.serviceMonitor.interval)",
        "message": "serviceMonitor.scrapeTimeout must not exceed serviceMonitor.interval",
    }],
    model.OtlpSpec: [{
        "rule": "!(has(self.enabled) && self.enabled) || (has(self.endpoint) && self.endpoint != '')",
        "message": "otlp.endpoint is required when otlp.enabled is true",
    }],
}


# Status models: the operator writes null where a value is not known yet.
_NULLABLE: set[type[BaseModel]] = {model.ProfileStatus, model.RolloutProgress}


def _func_of(metadata: list[Any], func: Any) -> Any:
    return next((m for m in metadata if getattr(m, "func", None) is func), None)


def _bounds_of(metadata: list[Any]) -> agentconfig.Bounds:
    found = next((m.func for m in metadata if isinstance(getattr(m, "func", None), agentconfig.Bounds)), None)
    return found or agentconfig.Bounds(agentconfig.DURATION_RESOLUTION_SECONDS)


def _constraints(metadata: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, annotated_types.MinLen):
            out["minLength"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            out["maxLength"] = item.max_length
        elif isinstance(item, annotated_types.Ge):
            out["minimum"] = item.ge
        elif isinstance(item, annotated_types.Le):
            out["maximum"] = item.le
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
    if _func_of(metadata, agentconfig.parse_duration):
        return {"x-kubernetes-int-or-string": True, "pattern": DURATION_PATTERN,
                "maxLength": DURATION_MAX_LENGTH,
                "x-kubernetes-validations": [_bounds_rule(cel_seconds("self"), _bounds_of(metadata))]}
    if _func_of(metadata, model.parse_prometheus_duration):
        return {"type": "string", "pattern": model.PROMETHEUS_DURATION_PATTERN, "minLength": 2,
                "maxLength": DURATION_MAX_LENGTH,
                "x-kubernetes-validations": [_bounds_rule("duration(self)", agentconfig.Bounds(0.001))]}
    if _func_of(metadata, agentconfig.check_syscalls):
        # A closed set: the names of the syscall tables the agent carries.
        return {"type": "array", "maxItems": agentconfig.MAX_SYSCALLS,
                "items": {"type": "string", "enum": sorted(agentconfig.KNOWN_SYSCALLS)}}
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return schema_of(args[0], metadata)
        if set(args) == {str, int}:
            out: dict[str, Any] = {"x-kubernetes-int-or-string": True}
            out.update(_constraints(metadata))
            return out
        raise TypeError(f"cannot map union {annotation!r} to a structural schema")
    if origin is Literal:
        values = list(get_args(annotation))
        return {"type": "string", "enum": values}
    if origin is list:
        (item,) = get_args(annotation)
        out = {"type": "array", "items": schema_of(item)}
        limits = _constraints(metadata)
        if "minLength" in limits:
            out["minItems"] = limits["minLength"]
        return out
    if origin is dict:
        key, value = get_args(annotation)
        if value is Any:  # a Kubernetes type passed through (affinity): the API server checks it
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        if get_origin(key) is Literal:
            return {"type": "object",
                    "properties": {k: _keyed_schema(k, value) for k in get_args(key)}}
        return {"type": "object", "additionalProperties": schema_of(value)}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_schema(annotation)
    simple = {str: "string", int: "integer", bool: "boolean", float: "number"}
    if annotation in simple:
        out = {"type": simple[annotation]}
        out.update(_constraints(metadata))
        return out
    raise TypeError(f"cannot map {annotation!r} to a structural schema")


def _keyed_schema(key: str, value: Any) -> dict[str, Any]:
    """One entry of a dict with fixed keys (collectors): options only where they exist."""
    schema = schema_of(value)
    if value is agentconfig.CollectorConfig:
        schema = {"description": f"The {key} collector.", **schema}
        schema["properties"] = {k: v for k, v in schema["properties"].items()
                                if key in agentconfig.COLLECTOR_OPTIONS.get(k, {key})}
    return schema


def _summary(doc: str | None) -> str:
    """A docstring's first paragraph on one line: the description kubectl explain shows."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _default_of(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]  # the model's factories take no validated data
    elif info.default is not PydanticUndefined:
        value = info.default
    else:
        return None
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        value = [v.model_dump(mode="json", exclude_none=True) if isinstance(v, BaseModel) else v for v in value]
    if (_func_of(info.metadata, agentconfig.parse_duration) or _func_of(info.metadata, model.parse_prometheus_duration)
            or _is_duration_type(info.annotation)) and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = agentconfig.format_duration(value)
    # Empty containers add nothing but noise to `kubectl get -o yaml`.
    if value in ({}, []):
        return None
    return value


def _is_duration_type(annotation: Any) -> bool:
    if get_origin(annotation) is typing.Annotated:
        _, *extra = get_args(annotation)
        return bool(_func_of(extra, agentconfig.parse_duration) or _func_of(extra, model.parse_prometheus_duration))
    return False


def model_schema(cls: type[BaseModel]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, info in cls.model_fields.items():
        prop = schema_of(info.annotation, info.metadata)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        for key in ("pattern", "maxItems", "format"):
            if key in extra:
                prop[key] = extra[key]
        default = _default_of(info)
        if default is not None:
            prop["default"] = default
        if cls in _NULLABLE and not info.is_required() and info.default is None:
            prop["nullable"] = True  # the operator writes null for "not known yet"
        if info.description:
            prop = {"description": info.description, **prop}
        properties[name] = prop
        if info.is_required():
            required.append(name)
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if cls in _RULES:
        out["x-kubernetes-validations"] = list(_RULES[cls])
    return out


def status_schema() -> dict[str, Any]:
    schema = model_schema(model.ProfileStatus)
    conditions = schema["properties"]["conditions"]
    # One condition per type, as metav1.Condition lists are merged.
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    # Fields a newer operator adds are kept, not pruned, during an upgrade.
    return {"description": _summary(model.ProfileStatus.__doc__),
            **schema, "x-kubernetes-preserve-unknown-fields": True}


def _condition(ctype: str, field: str) -> str:
    return f'.status.conditions[?(@.type=="{ctype}")].{field}'


PRINTER_COLUMNS = [
    {"name": "Profile", "type": "string", "jsonPath": ".spec.profile"},
    # Merged, InvalidSpec, OverBudget, NamespaceExcluded, Conflict, Reconciled, ...
    {"name": "State", "type": "string", "jsonPath": _condition("Reconciled", "reason"),
     "description": "Reason of the Reconciled condition: what the operator made of this CR."},
    {"name": "Ready", "type": "string", "jsonPath": _condition("Available", "status"),
     "description": "Fleet profile: the agent DaemonSet is available."},
    {"name": "Applied", "type": "string", "jsonPath": ".status.nodesApplied",
     "description": "Fleet profile: nodes running the current node config / nodes scheduled."},
    {"name": "Config", "type": "integer", "jsonPath": ".status.configGeneration", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": _condition("Reconciled", "message"), "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    spec_schema = {"description": _summary(model.ProfileSpec.__doc__),
                   **model_schema(model.ProfileSpec)}
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
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "Per-pod kernel metrics: the fleet profile (in the operator's "
                                   "namespace) or a namespace override (anywhere else).",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": status_schema(),
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
