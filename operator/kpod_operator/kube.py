"""A small generic Kubernetes API client, and apply with a last-applied diff.

The typed kubernetes client has no classes for ServiceMonitor/PrometheusRule
and turns every object into models; the operator only needs JSON in and out,
so it uses the client's ApiClient for auth/TLS and speaks plain paths.
"""
from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import urlencode

import kubernetes
import urllib3

LAST_APPLIED = "kpod.io/last-applied"
FIELD_MANAGER = "kpod-operator"

_PLURALS = {
    "ConfigMap": "configmaps", "DaemonSet": "daemonsets", "Service": "services",
    "ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings",
    "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings",
    "ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules", "Pod": "pods",
    "KpodMetricsProfile": "kpodmetricsprofiles", "NetworkPolicy": "networkpolicies",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def collection_path(api_version: str, kind: str, namespace: str | None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{ns}/{_PLURALS[kind]}"


def object_path(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{collection_path(obj['apiVersion'], obj['kind'], meta.get('namespace'))}/{meta['name']}"


class Kube:
    """JSON over the kubernetes client's ApiClient (kubeconfig or in-cluster auth)."""

    def __init__(self, api_client: kubernetes.client.ApiClient, timeout: float = 30.0) -> None:
        self.api = api_client
        self.timeout = timeout

    @classmethod
    def from_environment(cls) -> "Kube":
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        return cls(kubernetes.client.ApiClient())

    @classmethod
    def for_url(cls, url: str) -> "Kube":
        conf = kubernetes.client.Configuration()
        conf.host = url.rstrip("/")
        return cls(kubernetes.client.ApiClient(conf))

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, str] | None = None,
                content_type: str = "application/json") -> Any:
        if query:
            path = f"{path}?{urlencode(query)}"
        headers = {"Content-Type": content_type, "Accept": "application/json"}
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

    def list(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        data = self.request("GET", path, query=query) or {}
        return list(data.get("items") or [])

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        path = collection_path(obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace"))
        return self.request("POST", path, body=obj, query={"fieldManager": FIELD_MANAGER})

    def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body=patch, query={"fieldManager": FIELD_MANAGER},
                            content_type="application/merge-patch+json")

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


def contains(actual: Any, desired: Any) -> bool:
    """``desired`` is a sub-document of ``actual`` (the server adds defaults)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(k in actual and contains(actual[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and len(actual) == len(desired) and \
            all(contains(a, d) for a, d in zip(actual, desired))
    if isinstance(desired, (int, float)) and isinstance(actual, str) or \
            isinstance(desired, str) and isinstance(actual, (int, float)):
        return str(actual) == str(desired)
    return actual == desired


def three_way_patch(last: Any, desired: Any) -> Any:
    """Merge patch that sets ``desired`` and removes what the last apply set but
    ``desired`` no longer has (as kubectl's last-applied annotation does)."""
    if not isinstance(desired, dict) or not isinstance(last, dict):
        return copy.deepcopy(desired)
    out = {k: three_way_patch(last.get(k), v) for k, v in desired.items()}
    for key in last:
        if key not in desired:
            out[key] = None
    return out


def _strip_for_annotation(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    anns = obj.get("metadata", {}).get("annotations") or {}
    anns.pop(LAST_APPLIED, None)
    return obj


def apply(kube: Kube, desired: dict[str, Any]) -> str:
    """Create or converge one object; returns "created", "updated" or "unchanged".

    Only a real difference is written, so a resync or an operator restart
    changes nothing (no rollouts, no watch noise)."""
    path = object_path(desired)
    desired = _strip_for_annotation(desired)
    stamp = json.dumps(desired, sort_keys=True, separators=(",", ":"))
    with_stamp = copy.deepcopy(desired)
    with_stamp["metadata"].setdefault("annotations", {})[LAST_APPLIED] = stamp
    current = kube.get(path)
    if current is None:
        try:
            kube.create(with_stamp)
            return "created"
        except ApiError as exc:
            if exc.status != 409:
                raise
            current = kube.get(path) or {}
    anns = (current.get("metadata") or {}).get("annotations") or {}
    try:
        last = json.loads(anns.get(LAST_APPLIED) or "{}")
    except ValueError:
        last = {}
    if anns.get(LAST_APPLIED) == stamp and contains(current, desired):
        return "unchanged"
    patch = three_way_patch(last, with_stamp)
    # Identity fields are in the path; the API rejects changing them anyway.
    patch.pop("apiVersion", None)
    patch.pop("kind", None)
    kube.merge_patch(path, patch)
    return "updated"


def delete_managed(kube: Kube, obj: dict[str, Any]) -> bool:
    """Delete ``obj`` if it exists and was applied by us (never someone else's)."""
    path = object_path(obj)
    current = kube.get(path)
    if current is None or LAST_APPLIED not in ((current.get("metadata") or {}).get("annotations") or {}):
        return False
    try:
        kube.delete(path)
    except ApiError as exc:
        if exc.status != 404:
            raise
    return True
