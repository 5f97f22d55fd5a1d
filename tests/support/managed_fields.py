"""Server-side apply field management, as kube-apiserver's structured-merge-diff does it.

Pure functions over JSON objects, used by the emulated API server:

- a *field set* is the set of leaf paths of an object; a path element is
  ``("f", key)`` for a map key or ``("k", item_key)`` for an item of an
  associative list (lists of objects keyed by ``name``, ``containerPort``,
  ``port`` or ``uid``, as the Kubernetes OpenAPI marks containers, volumes,
  env, ports, ownerReferences); every other list is atomic (one leaf);
- ``managedFields`` holds one field set per (manager, operation) in the
  FieldsV1 form (``{"f:spec": {"f:replicas": {}}}``);
- ``apply`` merges an applied configuration: fields owned by another
  manager with a different value are conflicts (409 unless ``force``, which
  takes them over); fields this manager applied before and no longer applies
  are removed unless another manager owns them;
- ``update`` (create, merge/JSON patch, PUT) gives the changed fields to the
  updating manager and takes them from every other.
"""
from __future__ import annotations

import copy
import datetime
import json
from typing import Any

Path = tuple[tuple[str, Any], ...]

# List item keys of the associative lists in the built-in types the operator writes.
LIST_KEYS = ("name", "containerPort", "port", "uid")
# Never part of a field set: identity and server-owned metadata.
_SKIP_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
              "managedFields", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"}
_SKIP_TOP = {"apiVersion", "kind", "status"}


class Conflict(Exception):
    def __init__(self, conflicts: list[tuple[str, Path]]) -> None:
        self.conflicts = conflicts
        lines = [f'conflict with "{manager}": {dotted(path)}' for manager, path in conflicts]
        super().__init__(f"Apply failed with {len(conflicts)} conflict(s): " + "; ".join(lines))


def dotted(path: Path) -> str:
    out = ""
    for kind, key in path:
        out += f".{key}" if kind == "f" else f"[{json.dumps(key, sort_keys=True)}]"
    return out


def _list_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in LIST_KEYS:
        if all(key in i for i in items):
            return key
    return None


def _item_id(item: dict[str, Any], key: str) -> dict[str, Any]:
    return {key: item[key]}


def field_set(obj: dict[str, Any], has_status: bool = True) -> set[Path]:
    """Leaf paths of ``obj`` (identity, server metadata and status excluded)."""
    out: set[Path] = set()

    def walk(value: Any, path: Path) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, (*path, ("f", k)))
        elif isinstance(value, list) and (key := _list_key(value)) is not None:
            for item in value:
                item_path = (*path, ("k", json.dumps(_item_id(item, key), sort_keys=True)))
                out.add(item_path)
                for k, v in item.items():
                    walk(v, (*item_path, ("f", k)))
        else:
            out.add(path)

    for top, value in obj.items():
        if top in _SKIP_TOP and (top != "status" or has_status):
            continue
        if top == "metadata":
            for k, v in (value or {}).items():
                if k not in _SKIP_META:
                    walk(v, (("f", "metadata"), ("f", k)))
        else:
            walk(value, (("f", top),))
    return out


def get(obj: Any, path: Path) -> tuple[bool, Any]:
    node = obj
    for kind, key in path:
        if kind == "f":
            if not isinstance(node, dict) or key not in node:
                return False, None
            node = node[key]
        else:
            ident = json.loads(key)
            found = [i for i in node if isinstance(i, dict) and all(i.get(k) == v for k, v in ident.items())] \
                if isinstance(node, list) else []
            if not found:
                return False, None
            node = found[0]
    return True, node


def _remove(obj: Any, path: Path) -> None:
    if not path:
        return
    found, parent = get(obj, path[:-1])
    if not found:
        return
    kind, key = path[-1]
    if kind == "f" and isinstance(parent, dict):
        parent.pop(key, None)
    elif kind == "k" and isinstance(parent, list):
        ident = json.loads(key)
        parent[:] = [i for i in parent if not (isinstance(i, dict) and
                                               all(i.get(k) == v for k, v in ident.items()))]


def merge(live: Any, applied: Any) -> Any:
    """``applied`` over ``live``: maps recursively, associative lists by key."""
    if isinstance(live, dict) and isinstance(applied, dict):
        out = dict(live)
        for k, v in applied.items():
            out[k] = merge(live.get(k), v)
        return out
    if isinstance(live, list) and isinstance(applied, list) and (key := _list_key(applied)) is not None \
            and _list_key(live) in (key, None):
        by_id = {json.dumps(_item_id(i, key), sort_keys=True): i for i in applied}
        out_list = []
        for item in live:
            ident = json.dumps(_item_id(item, key), sort_keys=True) if isinstance(item, dict) and key in item else None
            out_list.append(merge(item, by_id.pop(ident)) if ident in by_id else item)
        return out_list + list(by_id.values())
    return copy.deepcopy(applied)


# ---- managedFields <-> field sets --------------------------------------------------

def _to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    nodes = []
    for path in sorted(paths, key=lambda p: [str(x) for x in p]):
        node = root
        for kind, key in path:
            node = node.setdefault(f"f:{key}" if kind == "f" else f"k:{key}", {})
        nodes.append(node)
    for node in nodes:  # a field owned itself and through its children
        if node:
            node["."] = {}
    return root


def _from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    children = {k: v for k, v in tree.items() if k != "."}
    if not children or "." in tree:
        if prefix:
            out.add(prefix)
    for key, sub in children.items():
        elem = ("f", key[2:]) if key.startswith("f:") else ("k", key[2:])
        out |= _from_fields_v1(sub, (*prefix, elem))
    return out


Owners = dict[tuple[str, str], set[Path]]


def owners(obj: dict[str, Any]) -> Owners:
    out: Owners = {}
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        key = (entry.get("manager", ""), entry.get("operation", "Update"))
        out[key] = _from_fields_v1(entry.get("fieldsV1") or {})
    return out


def _store(obj: dict[str, Any], table: Owners, api_version: str) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entries = []
    for (manager, operation), paths in table.items():
        if paths:
            entries.append({"manager": manager, "operation": operation, "apiVersion": api_version,
                            "time": now, "fieldsType": "FieldsV1", "fieldsV1": _to_fields_v1(paths)})
    meta = obj.setdefault("metadata", {})
    if entries:
        meta["managedFields"] = entries
    else:
        meta.pop("managedFields", None)


def _covered(path: Path, owned: set[Path]) -> bool:
    """``path`` or one of its ancestors / descendants is in ``owned``."""
    return any(p[:len(path)] == path or path[:len(p)] == p for p in owned)


def apply(live: dict[str, Any] | None, applied: dict[str, Any], manager: str, force: bool,
          has_status: bool) -> dict[str, Any]:
    """The object after ``manager`` applies ``applied``; raises Conflict."""
    applied = copy.deepcopy(applied)
    if has_status:
        applied.pop("status", None)
    applied.get("metadata", {}).pop("managedFields", None)
    mine = field_set(applied, has_status)
    if live is None:
        new = copy.deepcopy(applied)
        _store(new, {(manager, "Apply"): mine}, applied.get("apiVersion", ""))
        return new
    table = owners(live)
    me = (manager, "Apply")
    conflicts = []
    for other, paths in table.items():
        if other == me:
            continue
        for path in paths & mine:
            in_live, live_value = get(live, path)
            _, new_value = get(applied, path)
            if in_live and live_value != new_value:
                conflicts.append((other[0], path))
    if conflicts and not force:
        raise Conflict(sorted(conflicts, key=str))
    for other, path in conflicts:
        for key, paths in table.items():
            if key[0] == other and key != me:
                paths.discard(path)
    new = copy.deepcopy(live)
    previous = table.get(me, set())
    others = set().union(*(p for k, p in table.items() if k != me)) if table else set()
    # Shortest first: a removed list item takes its fields with it (removing
    # its key field first would leave the item unfindable).
    removed: list[Path] = []
    for path in sorted(previous - mine, key=len):
        if any(path[:len(r)] == r for r in removed):
            continue
        if not _covered(path, others) and not _covered(path, mine):
            _remove(new, path)
            removed.append(path)
    meta_keep = {k: v for k, v in (new.get("metadata") or {}).items() if k in _SKIP_META}
    new = merge(new, applied)
    new.setdefault("metadata", {}).update(meta_keep)
    table[me] = mine
    _store(new, table, applied.get("apiVersion", ""))
    return new


def update(old: dict[str, Any] | None, new: dict[str, Any], manager: str, has_status: bool) -> dict[str, Any]:
    """``new`` (changed in place) with managedFields after ``manager`` changed ``old`` into it."""
    table = owners(old) if old is not None else {}
    before = {p: get(old, p)[1] for p in field_set(old, has_status)} if old is not None else {}
    after = {p: get(new, p)[1] for p in field_set(new, has_status)}
    changed = {p for p, v in after.items() if p not in before or before[p] != v}
    gone = set(before) - set(after)
    for key, paths in table.items():
        paths -= gone
        if key != (manager, "Update"):
            paths -= changed
    table.setdefault((manager, "Update"), set()).update(changed)
    _store(new, table, new.get("apiVersion", ""))
    return new


def manager_from_user_agent(user_agent: str) -> str:
    """The API server's default fieldManager: the user agent up to the first '/'."""
    return (user_agent.split("/", 1)[0] or "unknown")[:128]
