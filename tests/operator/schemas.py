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
