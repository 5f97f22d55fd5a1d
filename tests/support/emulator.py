"""The emulated Kubernetes API server of the tests: kmock's KubernetesEmulator
plus the API-server behaviour the operator and the agent rely on.

kmock 0.8 stores objects as plain JSON and merges patches; a real API server
also stamps uid/resourceVersion/generation, keeps `status` behind its
subresource, takes the namespace from the URL, filters lists and watches by
label/field selectors, resumes a watch from a resourceVersion and holds a
deletion until the finalizers are gone. Only that is added here; discovery,
fetch, watch streaming and the event buses are kmock's.
Server-side apply (PATCH application/apply-patch+yaml with fieldManager and
force) keeps managedFields per manager as the API server does
(``managed_fields.py``); every other write records its manager too. Writes
over the API's size limits are refused (annotations 256 KiB, ConfigMap data
1 MiB, objects 1.5 MiB), PUT honours resourceVersion preconditions (leader
election on Leases), and deletions cascade as the garbage collector and the
namespace and CRD controllers do: dependents of a deleted owner, the objects
of a deleted namespace, the custom resources of a deleted CRD.
Watches resume from a resourceVersion by replaying the recorded events
(ADDED/MODIFIED/DELETED), end after ``timeoutSeconds``, and answer ERROR 410
once the history before that version is compacted.
Tests can make writes of one resource fail (as RBAC would), or every request
fail, to see failures reported and retried; they change objects directly
from any thread as a controller would::

    with EmulatedCluster() as api:
        client = api.api_client()                  # kubernetes.client.ApiClient for this server
        api.apply(make_pod("web", node="node-1"))  # ADDED (or MODIFIED if it exists)
        api.delete("pods", "default", "web")       # DELETED
        api.expire_watches()                       # open watches get ERROR 410; old versions are gone
        api.fail_with(500)                         # every request answers 500 until fail_with(None)
        api.served()                               # every request served (kmock.Request)
"""
from __future__ import annotations

import asyncio
import datetime
import json
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

# kmock exports no patch function: its own merge/JSON patch, the one its PATCH
# handler applies, is reached inside the package (hence the exact kmock pin,
# which the overrides of its private handlers below need as well).
from kmock._internal.dicts import patch_dict

from tests.support import managed_fields

# The resources the operator touches: (group/version/plural, kind, namespaced, subresources).
RESOURCES = [
    ("kpod.io/v1alpha1/kpodmetricsprofiles", "KpodMetricsProfile", True, {"status"}),
    ("v1/namespaces", "Namespace", False, {"status"}),  # kopf waits to discover it
    ("v1/pods", "Pod", True, {"status"}),
    ("v1/configmaps", "ConfigMap", True, set()),
    ("v1/services", "Service", True, {"status"}),
    ("v1/serviceaccounts", "ServiceAccount", True, set()),
    ("v1/events", "Event", True, set()),
    ("apps/v1/daemonsets", "DaemonSet", True, {"status"}),
    ("networking.k8s.io/v1/networkpolicies", "NetworkPolicy", True, set()),
    ("rbac.authorization.k8s.io/v1/roles", "Role", True, set()),
    ("rbac.authorization.k8s.io/v1/rolebindings", "RoleBinding", True, set()),
    ("rbac.authorization.k8s.io/v1/clusterroles", "ClusterRole", False, set()),
    ("rbac.authorization.k8s.io/v1/clusterrolebindings", "ClusterRoleBinding", False, set()),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False, {"status"}),
    ("coordination.k8s.io/v1/leases", "Lease", True, set()),
    ("apps/v1/deployments", "Deployment", True, {"status"}),  # the operator's own, in uninstall tests
]
MONITORING_RESOURCES = [
    ("monitoring.coreos.com/v1/servicemonitors", "ServiceMonitor", True, set()),
    ("monitoring.coreos.com/v1/prometheusrules", "PrometheusRule", True, set()),
]
VERBS = {"create", "delete", "get", "list", "patch", "update", "watch"}
APPLY_PATCH = "application/apply-patch+yaml"
# The API server's limits (apimachinery ValidateAnnotations, ConfigMap
# validation, etcd's request size).
MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_CONFIGMAP_BYTES = 1024 * 1024
MAX_OBJECT_BYTES = 1536 * 1024


def _limit_error(obj: dict[str, Any]) -> kmock.KubernetesError | None:
    anns = (obj.get("metadata") or {}).get("annotations") or {}
    size = sum(len(str(k)) + len(str(v)) for k, v in anns.items())
    if size > MAX_ANNOTATIONS_BYTES:
        return kmock.KubernetesError(status=422, reason="Invalid", message=(
            f"metadata.annotations: Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes, got {size}"))
    if obj.get("kind") == "ConfigMap":
        size = sum(len(str(k)) + len(str(v)) for part in ("data", "binaryData")
                   for k, v in (obj.get(part) or {}).items())
        if size > MAX_CONFIGMAP_BYTES:
            return kmock.KubernetesError(status=422, reason="Invalid", message=(
                f"data: Too long: must have at most {MAX_CONFIGMAP_BYTES} bytes"))
    if len(json.dumps(obj)) > MAX_OBJECT_BYTES:
        return kmock.KubernetesError(status=413, reason="RequestEntityTooLarge",
                                   message="etcdserver: request is too large")
    return None


def _clone(obj: Any) -> Any:
    """A deep copy of JSON data: a JSON round trip is 2-3x faster than
    copy.deepcopy on the large objects the size tests write."""
    return json.loads(json.dumps(obj))


def _manager(request: kmock.Request) -> str:
    return request.params.get("fieldManager") or \
        managed_fields.manager_from_user_agent(request.headers.get("User-Agent", ""))


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def selector_matches(obj: dict[str, Any], field_selector: str = "", label_selector: str = "") -> bool:
    """Whether `obj` passes a field selector (k=v, k==v, k!=v) and an
    equality-based label selector (k=v, k==v, k!=v, k, !k)."""
    for term in filter(None, (t.strip() for t in field_selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if _field(obj, key.strip()) == value.strip():
                return False
        else:
            key, _, value = term.replace("==", "=").partition("=")
            if _field(obj, key.strip()) != value.strip():
                return False
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in label_selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, _, value = term.replace("==", "=").partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


# Put on every event bus when the server closes: open watches end.
_CLOSING: dict[str, Any] = {"type": "CLOSING"}


def _gone(message: str) -> dict[str, Any]:
    return {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                        "code": 410, "reason": "Expired", "message": message}}


def _validate_event(event: dict[str, Any]) -> None:
    """What the API server checks of a core/v1 Event (ValidateEventCreate): an
    event about a namespaced object lives in that object's namespace."""
    involved = event.get("involvedObject") or {}
    problems = []
    if involved.get("namespace") != (event.get("metadata") or {}).get("namespace"):
        problems.append("involvedObject.namespace: does not match event.namespace")
    if event.get("type") not in ("Normal", "Warning"):
        problems.append(f"type: Unsupported value: {event.get('type')!r}")
    if not event.get("reason") or len(event["reason"]) > 128:
        problems.append("reason: Required value, at most 128 characters")
    if not involved.get("kind") or not involved.get("name"):
        problems.append("involvedObject: kind and name are required")
    if problems:
        raise kmock.KubernetesError(status=422, reason="Invalid", message="; ".join(problems))


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    _revision: int = attrs.field(default=0, init=False)
    # plural -> HTTP status for creates and patches (e.g. 403 as RBAC would answer).
    fail_writes: dict[str, int] = attrs.field(factory=dict, init=False)
    # Deleted namespaces and CRDs (group, plural): their objects go too.
    _gone_namespaces: set[str] = attrs.field(factory=set, init=False)
    _gone_crds: set[tuple[str, str]] = attrs.field(factory=set, init=False)
    # Every event with its resourceVersion, for watches resumed from a version;
    # compact() forgets it, and watches from before then get 410 Gone.
    _events: list[tuple[int, Any, dict[str, Any]]] = attrs.field(factory=list, init=False)
    _compacted: int = attrs.field(default=0, init=False)
    # HTTP status of every request (None: serve), as an API server that fails.
    failure: int | None = attrs.field(default=None, init=False)
    # Every request served, for tests that count lists and watches.
    served: list[kmock.Request] = attrs.field(factory=list, init=False)

    def _check_write(self, request: kmock.Request) -> None:
        code = self.fail_writes.get(request.resource.plural if request.resource else "")
        if code:
            raise kmock.KubernetesError(status=code, reason="Injected", message=f"injected HTTP {code}")

    def _has_status(self, resource: Any) -> bool:
        return resource in self.resources and "status" in self.resources[resource].subresources

    def _matches(self, request: kmock.Request, raw: dict[str, Any]) -> bool:
        meta = raw.get("metadata") or {}
        if request.namespace is not None and meta.get("namespace") != request.namespace:
            return False
        return selector_matches(raw, request.params.get("fieldSelector", ""), request.params.get("labelSelector", ""))

    async def _announce(self, resource: Any, kind: str, obj: dict[str, Any]) -> None:
        """An event to open watches, recorded for watches resumed later."""
        event = {"type": kind, "object": _clone(obj)}
        self._events.append((_rv(obj), resource, event))
        await self._buses[resource].put(event)

    def compact(self) -> None:
        """Forget the history: watches from any older version get 410 Gone."""
        self._compacted = self._revision
        self._events.clear()

    async def expire_watches(self) -> None:
        """End every open watch with ERROR 410 and compact, as an etcd compaction would."""
        self.compact()
        for resource in list(self._buses):
            await self._buses[resource].put(_gone("watch expired (emulated compaction)"))

    async def end_watches(self) -> None:
        """End every open watch (the server is closing)."""
        for resource in list(self._buses):
            await self._buses[resource].put(_CLOSING)

    def resource_of(self, kind: str) -> tuple[Any, bool]:
        """The served resource of a kind and whether it is namespaced."""
        for resource, info in self.resources.items():
            if info.kind == kind:
                return resource, bool(info.namespaced)
        raise ValueError(f"kind {kind!r} is not served by the emulator")

    def _next_rv(self) -> str:
        self._revision += 1
        return str(self._revision)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # kmock 0.8 matches a request against its reactions by re-filtering the
        # whole request log (dsl View.__contains__ -> Filter.__iter__), so every
        # request costs O(requests served so far): 3 ms after 0, 40 ms after 250.
        # Nothing here asserts on the log, so only the current request is kept.
        del self._requests[:-1]
        self.served.append(request)
        if self.failure is not None:
            raise kmock.KubernetesError(status=self.failure, reason="InternalError",
                                        message=f"emulated failure {self.failure}")
        if request.resource is not None and request.action == kmock.action.CREATE:
            return aiohttp.web.json_response(await self._create(request), status=201)
        if request.resource is not None and request.action == kmock.action.UPDATE and request.name:
            if request.headers.get("Content-Type", "").startswith(APPLY_PATCH):
                obj, created = await self._apply(request)
                return aiohttp.web.json_response(obj, status=201 if created else 200)
            return aiohttp.web.json_response(await self._update(request))
        if request.resource is not None and str(request.method.value).upper() == "PUT" and request.name:
            return aiohttp.web.json_response(await self._replace(request))
        if request.resource is not None and request.action == kmock.action.DELETE and request.name:
            return aiohttp.web.json_response(await self._delete(request))
        return await super()._handle(request)

    def _stamp_new(self, obj: dict[str, Any], keep_uid: bool = False) -> None:
        meta = obj.setdefault("metadata", {})
        meta.update({
            "uid": meta.get("uid") if keep_uid and meta.get("uid") else str(uuid.uuid4()),
            "resourceVersion": self._next_rv(),
            "generation": 1,
            "creationTimestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        })

    async def _store_new(self, resource: Any, key: Any, obj: dict[str, Any], keep_uid: bool = False) -> None:
        """Store a created object (under the lock) and announce it."""
        error = _limit_error(obj)
        if error is not None:
            raise error
        self._stamp_new(obj, keep_uid)
        if key in self.objects:
            self.objects[key].create(obj)
        else:
            self.objects[key] = obj
        await self._announce(resource, "ADDED", obj)

    async def put_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object, status included, as a controller
        would (a pod's uid as given: it names the pod's cgroups)."""
        resource, namespaced = self.resource_of(obj.get("kind", ""))
        obj = _clone(obj)
        meta = obj.setdefault("metadata", {})
        if namespaced:
            meta.setdefault("namespace", "default")
        async with self._lock:
            key = (resource, meta.get("namespace"), meta["name"])
            if key in self.objects and not self.objects[key].deleted:
                old = _clone(self.objects[key].raw)
                return await self._commit(resource, key, old, obj, whole=True)
            await self._store_new(resource, key, obj, keep_uid=True)
            return obj

    async def remove_object(self, plural: str, namespace: str | None, name: str) -> None:
        async with self._lock:
            key = next((k for k, o in self.objects.items()
                        if k[0].plural == plural and k[1] == namespace and k[2] == name and not o.deleted), None)
            if key is None:
                raise KeyError(f"{plural} {namespace}/{name} does not exist")
            await self._delete_one(key)
            await self._collect_garbage()

    async def _create(self, request: kmock.Request) -> dict[str, Any]:
        self._check_write(request)
        obj = _clone(request.data or {})
        meta = obj.setdefault("metadata", {})
        namespace = request.namespace or meta.get("namespace")
        if namespace:
            meta["namespace"] = namespace
        if request.resource is not None and request.resource.plural == "events":
            _validate_event(obj)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        has_status = self._has_status(request.resource)
        if has_status:
            obj.pop("status", None)
        meta.pop("managedFields", None)
        obj = managed_fields.update(None, obj, _manager(request), has_status)
        async with self._lock:
            key = (request.resource, namespace, obj["metadata"].get("name"))
            if key in self.objects and not self.objects[key].deleted:
                raise kmock.KubernetesError(status=409, reason="AlreadyExists", message="the object already exists")
            await self._store_new(request.resource, key, obj)
        return obj

    async def _apply(self, request: kmock.Request) -> tuple[dict[str, Any], bool]:
        """Server-side apply: create, or merge with managedFields per manager."""
        self._check_write(request)
        try:
            applied = yaml.safe_load(request.text)
        except yaml.YAMLError as exc:
            raise kmock.KubernetesError(status=400, reason="BadRequest", message=f"apply body: {exc}") from None
        if not isinstance(applied, dict) or "fieldManager" not in request.params:
            raise kmock.KubernetesError(status=400, reason="BadRequest",
                                      message="apply needs an object body and a fieldManager")
        meta = applied.setdefault("metadata", {})
        if meta.get("name", request.name) != request.name:
            raise kmock.KubernetesError(status=400, reason="BadRequest", message="name in body and URL differ")
        meta["name"] = request.name
        if request.namespace:
            meta["namespace"] = request.namespace
        manager = request.params["fieldManager"]
        force = request.params.get("force") == "true"
        has_status = self._has_status(request.resource)
        async with self._lock:
            key = (request.resource, request.namespace, request.name)
            live = None if key not in self.objects or self.objects[key].deleted else \
                _clone(self.objects[key].raw)
            try:
                new = managed_fields.apply(live, applied, manager, force, has_status)
            except managed_fields.Conflict as exc:
                raise kmock.KubernetesError(status=409, reason="Conflict", message=str(exc)) from None
            if live is None:
                await self._store_new(request.resource, key, new)
                return new, True
            return await self._commit(request.resource, key, live, new), False

    async def _commit(self, resource: Any, key: Any, old: dict[str, Any], new: dict[str, Any],
                      subresource: str | None = None, whole: bool = False) -> dict[str, Any]:
        """Store a changed object (under the lock): identity kept, versions
        bumped; a write to the main resource leaves the status as it was
        (``whole``: a controller's replacement, status included)."""
        new_meta = new.setdefault("metadata", {})
        for ident in ("uid", "name", "namespace", "creationTimestamp", "generation", "resourceVersion",
                      "deletionTimestamp"):
            if ident in old.get("metadata", {}):
                new_meta[ident] = old["metadata"][ident]
        if self._has_status(resource) and subresource != "status" and not whole:
            new["status"] = old.get("status")
            if new["status"] is None:
                new.pop("status")
        if new == old:
            return old
        error = _limit_error(new)
        if error is not None:
            raise error
        spec_old = {k: v for k, v in old.items() if k not in ("metadata", "status")}
        spec_new = {k: v for k, v in new.items() if k not in ("metadata", "status")}
        if spec_old != spec_new:
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
        new["metadata"]["resourceVersion"] = self._next_rv()
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self.objects[key].create(new)
            self.objects[key].delete()
            await self._announce(resource, "DELETED", new)
            await self._collect_garbage()
            return new
        self.objects[key].create(new)
        await self._announce(resource, "MODIFIED", new)
        return new

    async def _update(self, request: kmock.Request) -> dict[str, Any]:
        self._check_write(request)
        patch = request.data
        if not isinstance(patch, (dict, list)):
            raise kmock.KubernetesError(status=400, reason="BadRequest", message="patch body is not JSON")
        async with self._lock:
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                raise kmock.KubernetesObjectNotFoundError()
            old = _clone(self.objects[key].raw)
            try:
                new = _clone(dict(patch_dict(old, patch)))
            except Exception as exc:  # a failed JSON-patch test or path
                raise kmock.KubernetesError(status=422 if isinstance(patch, list) else 400,
                                          reason="Invalid", message=f"patch: {exc}") from None
            # The status subresource and the main resource each change only their part.
            if request.subresource == "status":
                new = {**old, "status": new.get("status")}
            else:
                has_status = self._has_status(request.resource)
                new.setdefault("metadata", {})["managedFields"] = old.get("metadata", {}).get("managedFields")
                new = managed_fields.update(old, new, _manager(request), has_status)
            return await self._commit(request.resource, key, old, new, request.subresource)

    async def _replace(self, request: kmock.Request) -> dict[str, Any]:
        """PUT: the whole object, refused (409) when its resourceVersion is stale."""
        self._check_write(request)
        body = request.data
        if not isinstance(body, dict):
            raise kmock.KubernetesError(status=400, reason="BadRequest", message="body is not an object")
        async with self._lock:
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                raise kmock.KubernetesObjectNotFoundError()
            old = _clone(self.objects[key].raw)
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != old["metadata"].get("resourceVersion"):
                raise kmock.KubernetesError(status=409, reason="Conflict", message=(
                    "Operation cannot be fulfilled: the object has been modified; "
                    "please apply your changes to the latest version and try again"))
            new = _clone(body)
            new.setdefault("metadata", {})["managedFields"] = old.get("metadata", {}).get("managedFields")
            new = managed_fields.update(old, new, _manager(request), self._has_status(request.resource))
            return await self._commit(request.resource, key, old, new, request.subresource)

    async def _delete(self, request: kmock.Request) -> dict[str, Any]:
        # Deletion is a change too: the event carries a fresh resourceVersion, so
        # a watch resumed from an older one still sees it.
        self._check_write(request)  # a refused delete, as RBAC would refuse it
        async with self._lock:
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                raise kmock.KubernetesObjectNotFoundError()
            last = await self._delete_one(key)
            await self._collect_garbage()
        return last

    async def _delete_one(self, key: Any) -> dict[str, Any]:
        last = _clone(self.objects[key].raw)
        meta = last.setdefault("metadata", {})
        meta["resourceVersion"] = self._next_rv()
        if meta.get("finalizers"):
            # Soft deletion until the finalizers are removed (see _commit).
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = datetime.datetime.now(datetime.UTC) \
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                self.objects[key].create(last)
                await self._announce(key[0], "MODIFIED", last)
            return last
        self.objects[key].delete()
        await self._announce(key[0], "DELETED", last)
        if key[0].plural == "namespaces":
            self._gone_namespaces.add(key[2])
        elif key[0].plural == "customresourcedefinitions":
            spec = last.get("spec") or {}
            self._gone_crds.add((spec.get("group"), (spec.get("names") or {}).get("plural")))
        return last

    async def _collect_garbage(self) -> None:
        """What the garbage collector and the namespace and CRD controllers do
        after a deletion (background propagation), until nothing more goes."""
        while True:
            live = {k: o.raw for k, o in self.objects.items() if not o.deleted}
            uids = {(o.get("metadata") or {}).get("uid") for o in live.values()}
            doomed = []
            for key, obj in live.items():
                resource, namespace, _ = key
                if (obj.get("metadata") or {}).get("deletionTimestamp"):
                    continue
                refs = (obj.get("metadata") or {}).get("ownerReferences") or []
                if (refs and all(r.get("uid") not in uids for r in refs)) \
                        or (namespace in self._gone_namespaces and resource.plural != "namespaces") \
                        or (resource.group, resource.plural) in self._gone_crds:
                    doomed.append(key)
            if not doomed:
                return
            for key in doomed:
                await self._delete_one(key)

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            items = [_clone(obj.raw) for (res, _, _), obj in self.objects.items()
                     if res == request.resource and not obj.deleted]
            revision = str(self._revision)
        resource = request.resource
        info = self.resources[resource]
        return {"kind": f"{info.kind}List",
                "apiVersion": f"{resource.group}/{resource.version}" if resource.group else resource.version,
                "metadata": {"resourceVersion": revision},
                "items": [raw for raw in items if self._matches(request, raw)]}

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        yield b""  # the headers now, even if nothing happens for a while
        timeout = request.params.get("timeoutSeconds")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(timeout) if timeout else None
        since_param = request.params.get("resourceVersion") or "0"
        since = int(since_param) if since_param.isdigit() else 0
        bus = self._buses[request.resource]
        async with self._lock:
            if since == 0:  # no version: the current state as ADDED events, then the changes
                replay = [{"type": "ADDED", "object": _clone(obj.raw)} for (res, _, _), obj in self.objects.items()
                          if res == request.resource and not obj.deleted]
            elif since < self._compacted:
                replay = [_gone(f"too old resource version: {since} ({self._compacted})")]
            else:
                replay = [_clone(event) for rv, res, event in self._events if res == request.resource and rv > since]
            mark = await bus.mark()
        try:
            for event in replay:
                if event["type"] == "ERROR":
                    yield event
                    return
                if self._matches(request, event["object"]):
                    yield event
            stream = bus.stream(since=mark)
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(stream)
                except (TimeoutError, StopAsyncIteration):
                    return
                if event is _CLOSING:
                    return
                if event.get("type") == "ERROR":
                    yield event
                    return
                raw = event.get("object") or {}
                if _rv(raw) > since and self._matches(request, raw):
                    yield event
        finally:
            await bus.unmark(mark)


class EmulatedCluster:
    """The emulator served on a local port from its own event-loop thread, so
    the operator (another thread) and the test (plain sync code) both use it
    over HTTP, as they would use a real API server."""

    handler_class: type[ClusterEmulator] = ClusterEmulator

    def __init__(self, monitoring: bool = False, host: str | None = None) -> None:
        self.host = host  # the address to listen on (None: kmock's loopback)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)
        self.thread.start()
        self.handler: ClusterEmulator | None = None
        self.server: kmock.Server | None = None
        self.url = self._call(self._start(monitoring))

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self, monitoring: bool) -> str:
        self.handler = self.handler_class()
        for spec in RESOURCES + (MONITORING_RESOURCES if monitoring else []):
            self._declare(*spec)
        await self.handler.__aenter__()
        self.server = kmock.Server(self.handler, host=self.host) if self.host else kmock.Server(self.handler)
        await self.server.__aenter__()
        return str(self.server.url).rstrip("/")

    def _declare(self, key: str, kind: str, namespaced: bool, subresources: set[str]) -> None:
        assert self.handler is not None
        plural = key.rsplit("/", 1)[1]
        self.handler.resources[key] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, singular=kind.lower(), verbs=VERBS,
            subresources=subresources, shortnames={"kmp"} if plural == "kpodmetricsprofiles" else set())

    def install_monitoring(self) -> None:
        """The Prometheus Operator CRDs appear: served from now on, and their
        CustomResourceDefinition objects created (watchers see them)."""
        async def declare() -> None:
            assert self.handler is not None
            crds = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            for key, kind, namespaced, subresources in MONITORING_RESOURCES:
                self._declare(key, kind, namespaced, subresources)
                group, version, plural = key.split("/")
                obj = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                       "metadata": {"name": f"{plural}.{group}"},
                       "spec": {"group": group, "names": {"plural": plural, "kind": kind},
                                "scope": "Namespaced" if namespaced else "Cluster",
                                "versions": [{"name": version, "served": True, "storage": True}]}}
                async with self.handler._lock:
                    self.handler._stamp_new(obj)
                    self.handler.objects[crds, None, obj["metadata"]["name"]] = obj
                    await self.handler._announce(crds, "ADDED", obj)
        self._call(declare())

    def delete_namespace(self, name: str) -> None:
        """DELETE /api/v1/namespaces/<name> (kmock's router reads that URL as a
        namespace prefix, not an object): the namespace and everything in it go."""
        async def delete() -> None:
            assert self.handler is not None
            key = (kmock.resource("", "v1", "namespaces"), None, name)
            async with self.handler._lock:
                if key in self.handler.objects and not self.handler.objects[key].deleted:
                    await self.handler._delete_one(key)
                else:
                    self.handler._gone_namespaces.add(name)
                await self.handler._collect_garbage()
        self._call(delete())

    def create_namespace(self, name: str) -> None:
        async def create() -> None:
            assert self.handler is not None
            key = (kmock.resource("", "v1", "namespaces"), None, name)
            obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            async with self.handler._lock:
                self.handler._stamp_new(obj)
                self.handler.objects[key] = obj
        self._call(create())

    def fail_writes(self, plural: str, code: int | None) -> None:
        """Creates and patches of ``plural`` answer ``code`` (None: heal)."""
        async def set_() -> None:
            assert self.handler is not None
            if code is None:
                self.handler.fail_writes.pop(plural, None)
            else:
                self.handler.fail_writes[plural] = code
        self._call(set_())

    def __enter__(self) -> EmulatedCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, fn: Any, *args: Any) -> Any:
        async def call() -> Any:
            return fn(*args)
        return self._call(call())

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (status included); returns it with its new resourceVersion."""
        assert self.handler is not None
        return self._call(self.handler.put_object(obj))

    def delete(self, plural: str, namespace: str | None, name: str) -> None:
        assert self.handler is not None
        self._call(self.handler.remove_object(plural, namespace, name))

    def expire_watches(self) -> None:
        assert self.handler is not None
        self._call(self.handler.expire_watches())

    def compact(self) -> None:
        assert self.handler is not None
        self._run(self.handler.compact)

    def fail_with(self, status: int | None) -> None:
        """Answer every request with this HTTP status (None: serve normally)."""
        assert self.handler is not None
        self.handler.failure = status

    def served(self) -> list[kmock.Request]:
        """Every request served so far."""
        assert self.handler is not None
        return self._run(lambda: list(self.handler.served))  # type: ignore[union-attr]

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient pointed at this server (plain http, no auth)."""
        import kubernetes.client

        return kubernetes.client.ApiClient(kubernetes.client.Configuration(host=self.url))

    def objects(self, plural: str) -> list[dict[str, Any]]:
        async def snapshot() -> list[dict[str, Any]]:
            assert self.handler is not None
            return [_clone(obj.raw) for (res, _, _), obj in self.handler.objects.items()
                    if res.plural == plural and not obj.deleted]
        return self._call(snapshot())

    def history(self, plural: str, namespace: str | None, name: str) -> list[dict[str, Any]]:
        async def versions() -> list[dict[str, Any]]:
            assert self.handler is not None
            for (res, ns, nm), obj in self.handler.objects.items():
                if res.plural == plural and ns == namespace and nm == name:
                    return [dict(v.raw) for v in obj.history if v is not None]
            return []
        return self._call(versions())

    def close(self) -> None:
        async def stop() -> None:
            if self.handler is not None:
                await self.handler.end_watches()  # the server's shutdown waits for open answers
            if self.server is not None:
                await self.server.__aexit__(None, None, None)
            if self.handler is not None:
                await self.handler.__aexit__(None, None, None)
        try:
            self._call(stop(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()
