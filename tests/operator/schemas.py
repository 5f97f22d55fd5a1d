"""OpenAPI v3 (as used by CRDs) -> JSON Schema validators, for tests."""
from __future__ import annotations

import copy
import pathlib
from typing import Any

import jsonschema
import yaml

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def to_json_schema(node: Any, strict: bool = True) -> Any:
    """int-or-string becomes anyOf; with ``strict`` unknown fields are errors,
    as `kubectl apply` (server-side field validation Strict) makes them."""
    if isinstance(node, list):
        return [to_json_schema(n, strict) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v, strict) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k != "default"}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-int-or-string"):
        string: dict[str, Any] = {"type": "string"}
        if "pattern" in out:
            string["pattern"] = out.pop("pattern")
        out["anyOf"] = [{"type": "integer"}, string]
    if strict and "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def crd_validator(crd: dict[str, Any], strict: bool = True) -> jsonschema.Draft7Validator:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return jsonschema.Draft7Validator(to_json_schema(copy.deepcopy(schema), strict))


def fixture_crd(name: str) -> dict[str, Any]:
    return yaml.safe_load((FIXTURES / name).read_text())


def walk(node: Any, path: str = ""):
    """(path, schema node) for every schema node under ``node``."""
    if isinstance(node, dict):
        yield path, node
        for key in ("properties",):
            for name, child in (node.get(key) or {}).items():
                yield from walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{path}{{}}")


# ---- admission as the API server does it: defaults, schema, CEL rules ----------

_CEL_PROGRAMS: dict[str, Any] = {}


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting: a missing property with a default gets it, at every level."""
    if isinstance(value, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                apply_defaults(prop, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                apply_defaults(extra, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item)
    return value


def _cel(rule: str) -> Any:
    import celpy
    program = _CEL_PROGRAMS.get(rule)
    if program is None:
        env = celpy.Environment()
        program = _CEL_PROGRAMS[rule] = env.program(env.compile(rule))
    return program


def cel_errors(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Every x-kubernetes-validations rule of ``schema`` evaluated (cel-python) on
    ``value`` and its children; a rule that is false or fails to evaluate is an error."""
    import celpy
    errors = []
    for rule in schema.get("x-kubernetes-validations") or []:
        try:
            result = _cel(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        except Exception as exc:  # an evaluation error refuses the object, as in the API server
            result = exc
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            errors.append(f"{path or '.'}: {rule['message']} (rule: {rule['rule']}; got {result!r})")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            child = props.get(key) if key in props else (extra if isinstance(extra, dict) else None)
            if child is not None:
                errors += cel_errors(child, item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors


def admission_errors(crd: dict[str, Any], obj: dict[str, Any], strict: bool = True) -> list[str]:
    """What the API server says to ``obj``: defaults applied, then the
    openAPIV3Schema (jsonschema) and the CEL rules. [] = admitted."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj = apply_defaults(schema, copy.deepcopy(obj))
    errors = [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
              for e in crd_validator(crd, strict).iter_errors(obj)]
    if errors:
        return errors
    return cel_errors(schema, obj)
