"""A small generic Kubernetes API client, and server-side apply.

The typed kubernetes client has no classes for ServiceMonitor/PrometheusRule
and turns every object into models; the operator only needs JSON in and out,
so it uses the client's ApiClient for auth/TLS and speaks plain paths.

Objects are written with server-side apply under the field manager
``kpod-operator`` (force: the operator's intent wins over a hand edit of a
field it sets). The API server records what each manager owns in
``managedFields``: fields the operator stops rendering are removed by the
server, fields another manager added are left alone, and nothing grows with
the object's size (no last-applied copy in an annotation, whose 256 KiB limit
a large node config would exceed).
"""
from __future__ import annotations

import builtins
import copy
import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlencode

import kubernetes
import urllib3

FIELD_MANAGER = "kpod-operator"
# A digest of the last applied intent: a resync compares it instead of
# re-sending every object (the API server would answer a no-op apply, but at
# the cost of a write request per object per resync).
APPLIED_DIGEST = "kpod.io/applied-digest"
# Written by operator versions before server-side apply; removed on the first apply.
LEGACY_LAST_APPLIED = "kpod.io/last-applied"
APPLY_PATCH = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class NotLeader(ApiError):
    """A write refused locally: this process no longer holds the leader Lease."""

    def __init__(self) -> None:
        super().__init__(0, "not the leader (lease lost or not renewed in time): write refused")


class ErrorSink(Protocol):
    def api_error(self, verb: str, code: int) -> None: ...


def plural_of(kind: str) -> str:
    """The API conventions' plural of a kind (what discovery reports for every
    kind the operator writes; tests check it against discovery)."""
    lower = kind.lower()
    if lower.endswith(("s", "x", "z", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


def collection_path(api_version: str, kind: str, namespace: str | None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{ns}/{plural_of(kind)}"


def object_path(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{collection_path(obj['apiVersion'], obj['kind'], meta.get('namespace'))}/{meta['name']}"


def verb_of(method: str, path: str, query: dict[str, str] | None) -> str:
    """The RBAC verb of a request, for the API error counter."""
    method = method.upper()
    if method != "GET":
        return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method, method.lower())
    if (query or {}).get("watch") in ("true", "1"):
        return "watch"
    parts = [p for p in path.split("?")[0].split("/") if p]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    return "get" if len(rest) >= 2 else "list"


class Kube:
    """JSON over the kubernetes client's ApiClient (kubeconfig or in-cluster auth)."""

    def __init__(self, api_client: kubernetes.client.ApiClient, timeout: float = 30.0) -> None:
        self.api = api_client
        self.timeout = timeout
        # Asked before every write: False refuses it (a standby, or a leader
        # whose Lease was not renewed in time must not write).
        self.may_write: Callable[[], bool] = lambda: True
        self.errors: ErrorSink | None = None
        self._discovery: dict[str, dict[str, str]] = {}
        self._discovery_lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> Kube:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        return cls(kubernetes.client.ApiClient())

    @classmethod
    def for_url(cls, url: str) -> Kube:
        conf = kubernetes.client.Configuration()
        conf.host = url.rstrip("/")
        return cls(kubernetes.client.ApiClient(conf))

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, str] | None = None,
                content_type: str = "application/json") -> Any:
        if method.upper() != "GET" and not self.may_write():
            raise NotLeader()
        try:
            return self._request(method, path, body, query, content_type)
        except ApiError as exc:
            if self.errors is not None:
                self.errors.api_error(verb_of(method, path, query), exc.status)
            raise

    def _request(self, method: str, path: str, body: Any, query: dict[str, str] | None,
                 content_type: str) -> Any:
        if query:
            path = f"{path}?{urlencode(query)}"
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if content_type == APPLY_PATCH and not isinstance(body, (str, bytes)):
            body = json.dumps(body)  # JSON is YAML: the server parses it either way
        try:
            method, url, headers, body, _ = self.api.param_serialize(
                method, path, header_params=headers, body=body, auth_settings=["BearerToken"])
            resp = self.api.call_api(method, url, header_params=headers, body=body,
                                     _request_timeout=self.timeout)
            data = resp.read()
        except kubernetes.client.ApiException as exc:
            raise ApiError(int(exc.status or 0), str(exc.reason)) from None
        except urllib3.exceptions.HTTPError as exc:
            raise ApiError(0, f"{type(exc).__name__}: {exc}") from None
        if not 200 <= resp.status < 300:
            try:
                message = json.loads(data or b"{}").get("message") or resp.reason
            except ValueError:
                message = resp.reason
            raise ApiError(int(resp.status), str(message))
        return json.loads(data) if data else None

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict[str, Any]]:
        query = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        data = self.request("GET", path, query=query or None) or {}
        return list(data.get("items") or [])

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        path = collection_path(obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace"))
        return self.request("POST", path, body=obj, query={"fieldManager": FIELD_MANAGER})

    def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body=patch, query={"fieldManager": FIELD_MANAGER},
                            content_type="application/merge-patch+json")

    def json_patch(self, path: str, ops: builtins.list[dict[str, Any]]) -> dict[str, Any]:
        return self.request("PATCH", path, body=ops, query={"fieldManager": FIELD_MANAGER},
                            content_type=JSON_PATCH)

    def server_side_apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Apply ``obj`` as field manager kpod-operator, forcing conflicts."""
        return self.request("PATCH", self.resource_path(obj), body=obj,
                            query={"fieldManager": FIELD_MANAGER, "force": "true"}, content_type=APPLY_PATCH)

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def served(self, group_version: str) -> bool:
        """Is group/version served (the CRDs of it installed)? Discovery, not a guess."""
        try:
            data = self.request("GET", f"/apis/{group_version}")
        except ApiError as exc:
            if exc.status in (404, 503):
                return False
            raise
        return bool((data or {}).get("resources"))

    def plural(self, api_version: str, kind: str) -> str:
        """The resource name of ``kind`` as the API server's discovery lists it."""
        with self._discovery_lock:
            kinds = self._discovery.get(api_version)
        if kinds is None or kind not in kinds:
            prefix = "/api" if "/" not in api_version else "/apis"
            try:
                data = self.request("GET", f"{prefix}/{api_version}") or {}
            except ApiError as exc:
                if exc.status not in (404, 503):
                    raise
                data = {}
            kinds = {r["kind"]: r["name"] for r in data.get("resources") or []
                     if isinstance(r, dict) and "/" not in str(r.get("name", "")) and r.get("kind")}
            with self._discovery_lock:
                self._discovery[api_version] = kinds
        if kind not in kinds:
            raise ApiError(404, f"{kind} is not served by {api_version}")
        return kinds[kind]

    def resource_path(self, obj: dict[str, Any]) -> str:
        meta = obj["metadata"]
        api_version = obj["apiVersion"]
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        ns = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
        return f"{base}{ns}/{self.plural(api_version, obj['kind'])}/{meta['name']}"


def contains(actual: Any, desired: Any) -> bool:
    """``desired`` is a sub-document of ``actual`` (the server adds defaults)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(k in actual and contains(actual[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and len(actual) == len(desired) and \
            all(contains(a, d) for a, d in zip(actual, desired, strict=True))
    if isinstance(desired, (int, float)) and isinstance(actual, str) or \
            isinstance(desired, str) and isinstance(actual, (int, float)):
        return str(actual) == str(desired)
    return actual == desired


def digest(obj: dict[str, Any]) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _annotations(obj: dict[str, Any] | None) -> dict[str, Any]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def managed_by_us(obj: dict[str, Any] | None) -> bool:
    """Applied by this operator: its manager owns fields, or the legacy annotation is there."""
    entries = ((obj or {}).get("metadata") or {}).get("managedFields") or []
    return any(e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply" for e in entries) \
        or LEGACY_LAST_APPLIED in _annotations(obj)


# ---- the DaemonSet's security-relevant fields ----------------------------------

# Pod spec fields whose every value is the operator's: a hand-set hostNetwork
# or an extra hostPath volume is a privilege the rendered agent never asked
# for, so they are restored even when another field manager set them.
SECURITY_POD_FIELDS = ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace", "hostUsers",
                       "securityContext", "volumes", "serviceAccountName", "serviceAccount",
                       "automountServiceAccountToken", "containers", "initContainers", "ephemeralContainers")
SECURITY_CONTAINER_FIELDS = ("securityContext", "volumeMounts", "volumeDevices", "image", "command", "args")


def _empty(value: Any) -> bool:
    return value in (None, False, {}, [])


def _by_name(items: Any) -> dict[Any, Any]:
    return {i.get("name"): i for i in items or [] if isinstance(i, dict)}


def _same(live: Any, desired: Any) -> bool:
    """Equal up to what the API server defaults inside (desired ⊆ live), with
    nothing extra: no key set in live that desired leaves out."""
    if _empty(desired):
        return _empty(live)
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(_same(live.get(k), desired.get(k)) if k in desired
                                              else _empty(v) or not _security_key(k)
                                              for k, v in live.items()) \
            and all(k in live for k in desired)
    if isinstance(desired, list):
        return (isinstance(live, list) and len(live) == len(desired)
                and all(_same(a, d) for a, d in zip(live, desired, strict=True)))
    return contains(live, desired)


def _security_key(key: str) -> bool:
    # Keys the API server fills in by default are not drift; everything a
    # hand edit could widen privileges with is.
    return key not in ("terminationMessagePath", "terminationMessagePolicy", "defaultMode", "type",
                       "resources", "imagePullPolicy", "timeoutSeconds", "successThreshold", "failureThreshold",
                       "periodSeconds")


def security_drift(desired_ds: dict[str, Any], live_ds: dict[str, Any]) -> list[str]:
    """Security-relevant pod template fields of the live DaemonSet that differ
    from the rendered ones (pure; "" list when none)."""
    want = ((desired_ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    have = ((live_ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    drifted = []
    for key in SECURITY_POD_FIELDS:
        if key in ("containers", "initContainers", "ephemeralContainers"):
            wanted, live = _by_name(want.get(key)), _by_name(have.get(key))
            if set(wanted) != set(live) or any(
                    not _same(live[name].get(field), c.get(field))
                    for name, c in wanted.items() for field in SECURITY_CONTAINER_FIELDS):
                drifted.append(key)
        elif key == "serviceAccount":
            # Deprecated alias the API server sets to serviceAccountName.
            if have.get(key) not in (None, want.get("serviceAccountName")):
                drifted.append(key)
        elif key == "volumes":
            wanted, live = _by_name(want.get(key)), _by_name(have.get(key))
            if set(wanted) != set(live) or not all(_same(live[n], v) for n, v in wanted.items()):
                drifted.append(key)
        elif not _same(have.get(key), want.get(key)):
            drifted.append(key)
    return drifted


def restore_ops(desired_ds: dict[str, Any], drifted: list[str], resource_version: str) -> list[dict[str, Any]]:
    """JSON patch putting the drifted pod template fields back, only if nothing
    changed the object since it was read (test on resourceVersion)."""
    want = desired_ds["spec"]["template"]["spec"]
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion", "value": resource_version}]
    for key in drifted:
        path = f"/spec/template/spec/{key}"
        if key == "serviceAccount" or key not in want:
            ops.append({"op": "remove", "path": path})
        else:
            ops.append({"op": "add", "path": path, "value": copy.deepcopy(want[key])})
    return ops


def apply(kube: Kube, desired: dict[str, Any]) -> str:
    """Create or converge one object; returns "created", "updated" or "unchanged".

    Only a real difference is written, so a resync or an operator restart
    changes nothing (no rollouts, no watch noise)."""
    desired = copy.deepcopy(desired)
    anns = desired["metadata"].setdefault("annotations", {})
    anns.pop(APPLIED_DIGEST, None)
    stamp = digest(desired)
    anns[APPLIED_DIGEST] = stamp
    path = kube.resource_path(desired)
    current = kube.get(path)
    drifted = security_drift(desired, current) if current and desired["kind"] == "DaemonSet" else []
    if current is not None and _annotations(current).get(APPLIED_DIGEST) == stamp \
            and LEGACY_LAST_APPLIED not in _annotations(current) \
            and contains(current, desired) and not drifted:
        return "unchanged"
    result = kube.server_side_apply(desired)
    if desired["kind"] == "DaemonSet":
        # Fields another manager added are not removed by an apply: the
        # security-relevant ones are put back by a patch of their own.
        drifted = security_drift(desired, result)
        if drifted:
            result = kube.json_patch(path, restore_ops(desired, drifted, result["metadata"]["resourceVersion"]))
    if LEGACY_LAST_APPLIED in _annotations(result):
        # Upgrade from the client-side apply: the copy is no longer needed.
        kube.merge_patch(path, {"metadata": {"annotations": {LEGACY_LAST_APPLIED: None}}})
    return "created" if current is None else "updated"


def delete_managed(kube: Kube, obj: dict[str, Any]) -> bool:
    """Delete ``obj`` if it exists and was applied by us (never someone else's)."""
    try:
        path = kube.resource_path(obj)
    except ApiError as exc:
        if exc.status == 404:  # its kind is not served: nothing of it exists
            return False
        raise
    current = kube.get(path)
    if current is None or not managed_by_us(current):
        return False
    try:
        kube.delete(path)
    except ApiError as exc:
        if exc.status != 404:
            raise
    return True
