"""A small emulated Kubernetes API server for pods and configmaps, built on kmock.

Enough of the API for the kubernetes python client's list + watch, as the
agent uses it:

- ``GET /api/v1/pods`` and ``/api/v1/namespaces/<ns>/{pods,configmaps}``:
  list (with ``metadata.resourceVersion``) and ``?watch=true`` streams;
- ``fieldSelector`` (``spec.nodeName``, ``metadata.name``,
  ``metadata.namespace``; ``=``, ``==``, ``!=``) and simple ``labelSelector``
  (``k=v``, ``k!=v``, ``k``, ``!k``);
- watches resume from ``resourceVersion`` (events replayed from history),
  end after ``timeoutSeconds``, and answer ``410 Gone`` once the history
  before that version is compacted;
- ``GET .../<name>`` fetches one object.

Tests change the state through Python, from any thread::

    from tests.support.kube_emulator import EmulatorServer
    from tests.support.fake_kubelet import make_pod

    with EmulatorServer() as api:
        client = api.api_client()                  # kubernetes.client.ApiClient for this server
        api.apply(make_pod("web", node="node-1"))  # ADDED (or MODIFIED if it exists)
        api.delete("pods", "default", "web")       # DELETED
        api.expire_watches()                       # open watches get ERROR 410; old versions are gone
        api.fail_with(500)                         # lists and watches answer 500 until fail_with(None)
        api.requests                               # kmock's record of every request

The handler (``api.kmock``) is a ``kmock.KubernetesScaffold``: API discovery
and error documents come from kmock, and kmock reactions can still be added
to it (``api.kmock['get /healthz'] << b'ok'``). Writes over HTTP are not
emulated: the agent only reads.
"""
from __future__ import annotations

import asyncio
import copy
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import kmock

RESOURCES = ("pods", "configmaps")
_KINDS = {"pods": "Pod", "configmaps": "ConfigMap"}


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def selector_matches(obj: dict[str, Any], field_selector: str = "", label_selector: str = "") -> bool:
    """Whether `obj` passes a Kubernetes field selector and equality-based label selector."""
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


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "code": code, "reason": reason, "message": message}


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesScaffold):
    """The kmock handler: an in-memory store of pods and configmaps with versions.

    All state lives on the server's event loop; use EmulatorServer's
    thread-safe methods to change it."""

    _store: dict[tuple[str, str, str], dict[str, Any]] = attrs.field(factory=dict, init=False)
    # (resourceVersion, plural, event) in version order; trimmed by compact().
    _history: list[tuple[int, str, dict[str, Any]]] = attrs.field(factory=list, init=False)
    _rv: int = attrs.field(default=0, init=False)
    _compacted: int = attrs.field(default=0, init=False)
    _epoch: int = attrs.field(default=0, init=False)  # bumped by expire_watches()
    _changed: asyncio.Event | None = attrs.field(default=None, init=False)
    _failure: int | None = attrs.field(default=None, init=False)
    _closing: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for plural in RESOURCES:
            self.resources[kmock.resource("", "v1", plural)] = kmock.ResourceInfo(
                kind=_KINDS[plural], namespaced=True, verbs={"get", "list", "watch"})
        self.fallback[kmock.action.LIST] << self._serve_list
        self.fallback[kmock.action.WATCH] << self._serve_watch
        self.fallback[kmock.action.FETCH] << self._serve_fetch

    # -- state changes (call on the loop) --------------------------------------------

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
        self._changed = asyncio.Event()

    def _record(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        self._history.append((self._rv, plural, {"type": kind, "object": copy.deepcopy(obj)}))
        self._wake()

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        plural = {"Pod": "pods", "ConfigMap": "configmaps"}.get(obj.get("kind", ""))
        if plural is None:
            raise ValueError(f"only Pod and ConfigMap objects are emulated, got kind {obj.get('kind')!r}")
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        key = (plural, meta["namespace"], meta["name"])
        old = self._store.get(key)
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        meta.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        obj.setdefault("apiVersion", "v1")
        self._store[key] = obj
        self._record(plural, "MODIFIED" if old else "ADDED", obj)
        return copy.deepcopy(obj)

    def delete(self, plural: str, namespace: str, name: str) -> None:
        obj = self._store.pop((plural, namespace, name), None)
        if obj is None:
            raise KeyError(f"{plural} {namespace}/{name} does not exist")
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._record(plural, "DELETED", obj)

    def compact(self) -> None:
        """Forget the history: watches from any older version get 410 Gone."""
        self._compacted = self._rv
        self._history.clear()

    def expire_watches(self) -> None:
        """End every open watch with ERROR 410 and compact, as an etcd compaction would."""
        self.compact()
        self._epoch += 1
        self._wake()

    def fail_with(self, status: int | None) -> None:
        self._failure = status

    def close(self) -> None:
        self._closing = True
        self._wake()

    # -- serving ---------------------------------------------------------------------

    def _check(self, request: kmock.Request) -> str:
        if self._failure is not None:
            raise kmock.KubernetesError(status=self._failure, reason="InternalError",
                                        message=f"emulated failure {self._failure}")
        if request.resource is None or request.resource.group != "" or request.resource.plural not in RESOURCES:
            raise kmock.KubernetesResourceNotFoundError()
        return request.resource.plural

    def _selected(self, request: kmock.Request, plural: str, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if request.namespace is not None and meta.get("namespace") != request.namespace:
            return False
        if request.name is not None and meta.get("name") != request.name:
            return False
        return selector_matches(obj, request.params.get("fieldSelector", ""), request.params.get("labelSelector", ""))

    async def _serve_list(self, request: kmock.Request) -> dict[str, Any]:
        plural = self._check(request)
        items = [copy.deepcopy(o) for (p, _, _), o in sorted(self._store.items()) if p == plural
                 and self._selected(request, plural, o)]
        return {"kind": f"{_KINDS[plural]}List", "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._rv)}, "items": items}

    async def _serve_fetch(self, request: kmock.Request) -> dict[str, Any]:
        plural = self._check(request)
        obj = self._store.get((plural, request.namespace or "", request.name or ""))
        if obj is None:
            raise kmock.KubernetesObjectNotFoundError()
        return copy.deepcopy(obj)

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        plural = self._check(request)
        return self._stream(request, plural)

    async def _stream(self, request: kmock.Request, plural: str) -> AsyncIterator[Any]:
        yield b""  # send the headers now, even if nothing happens for a while
        timeout = float(request.params.get("timeoutSeconds") or 3600)
        deadline = asyncio.get_running_loop().time() + timeout
        epoch = self._epoch
        raw_rv = request.params.get("resourceVersion", "")
        if raw_rv in ("", "0"):
            # No version: the current state as ADDED events, then the changes.
            for (p, _, _), obj in sorted(self._store.items()):
                if p == plural and self._selected(request, plural, obj):
                    yield {"type": "ADDED", "object": copy.deepcopy(obj)}
            since = self._rv
        else:
            since = int(raw_rv)
            if since < self._compacted:
                yield {"type": "ERROR", "object": _status(410, "Expired",
                                                          f"too old resource version: {since} ({self._compacted})")}
                return
        while not self._closing:
            for rv, p, event in list(self._history):
                if rv > since and p == plural and self._selected(request, plural, event["object"]):
                    yield copy.deepcopy(event)
            since = self._rv
            if self._epoch != epoch:
                yield {"type": "ERROR", "object": _status(410, "Expired", "watch expired (emulated compaction)")}
                return
            if self._changed is None:
                self._changed = asyncio.Event()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return


class EmulatorServer:
    """Runs a KubeEmulator on 127.0.0.1:<random port> in a background event-loop thread."""

    def __init__(self) -> None:
        self.kmock = KubeEmulator()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-emulator", daemon=True)
        self._server: kmock.Server | None = None
        self.url = ""

    def __enter__(self) -> "EmulatorServer":
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self._stop(), timeout=15)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    async def _start(self) -> None:
        await self.kmock.__aenter__()
        self._server = kmock.Server(self.kmock)
        await self._server.__aenter__()
        self.url = str(self._server.url).rstrip("/")

    async def _stop(self) -> None:
        self.kmock.close()
        await asyncio.sleep(0)  # let open watches see the close and finish
        assert self._server is not None
        await self._server.__aexit__(None, None, None)
        await self.kmock.__aexit__(None, None, None)

    def _call(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _run(self, fn: Any, *args: Any) -> Any:
        async def call() -> Any:
            return fn(*args)
        return self._call(call())

    # -- thread-safe state changes ---------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a Pod or ConfigMap; returns it with its new resourceVersion."""
        return self._run(self.kmock.apply, obj)

    def delete(self, plural: str, namespace: str, name: str) -> None:
        self._run(self.kmock.delete, plural, namespace, name)

    def expire_watches(self) -> None:
        self._run(self.kmock.expire_watches)

    def compact(self) -> None:
        self._run(self.kmock.compact)

    def fail_with(self, status: int | None) -> None:
        """Answer every list/watch/get with this HTTP status (None: serve normally)."""
        self._run(self.kmock.fail_with, status)

    @property
    def requests(self) -> list[kmock.Request]:
        return list(self.kmock)

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient pointed at this server (plain http, no auth)."""
        import kubernetes.client

        configuration = kubernetes.client.Configuration(host=self.url)
        return kubernetes.client.ApiClient(configuration)
