"""kopf wiring: which events call what, and how results become kopf's retries.

Everything that decides lives in ``plan`` (pure) and ``reconciler`` (read,
plan, apply, status); a handler here builds nothing itself.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kpod_operator import kube as kubeapi
from kpod_operator import model, plan, reconciler, render

log = logging.getLogger("kpod_operator")

CR = (model.GROUP, model.VERSION, model.PLURAL)


def _is_fleet(namespace: str | None, memo: Any, **_: Any) -> bool:
    return namespace == memo.op.config.namespace


def _is_override(namespace: str | None, memo: Any, **_: Any) -> bool:
    return namespace != memo.op.config.namespace


def _in_agent_namespace(namespace: str | None, memo: Any, **_: Any) -> bool:
    return namespace == memo.op.agent_namespace


def on_fleet(memo: Any, retry: int = 0, **_: Any) -> None:
    op: reconciler.Operator = memo.op
    delay = reconciler.retry_delay(retry, op.config.retry_base_seconds, op.config.resync_seconds)
    try:
        outcome = reconciler.reconcile(op)
    except kubeapi.ApiError as exc:
        # A read or a status write failed: retried like a failed apply, not
        # after kopf's default minute.
        raise kopf.TemporaryError(f"API error: {exc}", delay=delay) from None
    # kopf retries temporary failures and records permanent ones per generation.
    if outcome is not None and outcome.reason == "InvalidSpec":
        raise kopf.PermanentError(outcome.message)
    if outcome is not None and outcome.reason == "ApplyFailed":
        raise kopf.TemporaryError(outcome.message, delay=delay)


def on_override_event(memo: Any, event: Any, namespace: str | None, name: str, **_: Any) -> None:
    op: reconciler.Operator = memo.op
    body = event.get("object") or {}
    key = (namespace or "", name)
    deleted = event.get("type") == "DELETED" or bool((body.get("metadata") or {}).get("deletionTimestamp"))
    marker = None if deleted else body.get("spec")
    if key in op.seen_overrides and op.seen_overrides[key] == marker:
        return  # our own status write, or nothing new
    reconciler.reconcile_coalesced(op)
    op.seen_overrides[key] = marker
    if deleted:
        op.seen_overrides.pop(key, None)


def on_fleet_deleted(memo: Any, event: Any, **_: Any) -> None:
    # A conflicting fleet CR takes over when the active one goes away.
    if event.get("type") == "DELETED":
        reconciler.reconcile_coalesced(memo.op)


def on_agent_event(memo: Any, **_: Any) -> None:
    try:
        reconciler.request_refresh(memo.op)
    except kubeapi.ApiError as exc:
        log.warning("status refresh failed: %s; retrying soon", exc)
        memo.op.retry_soon()


async def start_resync(memo: Any, **_: Any) -> None:
    """One operator-wide resync (rollout check, drift, late Prometheus Operator
    CRDs) instead of a kopf timer: timers make kopf put a finalizer on every
    CR, and then deleting a CR would hang whenever the operator is down."""
    memo.resync_task = asyncio.create_task(reconciler.resync_loop(memo.op), name="kpod-resync")


async def stop_resync(memo: Any, **_: Any) -> None:
    task = getattr(memo, "resync_task", None)
    if task is not None:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


class _TolerantProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's progress annotation; one that is not a JSON object (hand-edited,
    copied with `kubectl get -o yaml`) counts as absent. kopf itself raises on
    it for every event of the CR, and only the resync would apply its changes."""

    def fetch(self, *, key: Any, body: Any) -> Any:
        try:
            record = super().fetch(key=key, body=body)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None


class _TolerantDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """The last handled spec, kept as a digest: kopf's own copy of the whole
    spec would outgrow the API server's 256 KiB annotation limit with a large
    namespace list, and every later patch of the CR would then be refused.
    A matching digest stands for "unchanged"; a different one makes the CR
    look changed, which is all the fleet handler needs (it reads the CR
    afresh). Unreadable counts as absent (the CR is handled as new, which the
    idempotent reconcile makes harmless); a full copy from an older version
    is still read."""

    def fetch(self, *, body: Any) -> Any:
        try:
            essence: Any = super().fetch(body=body)
        except ValueError:
            return None
        if not isinstance(essence, dict):
            return None
        if set(essence) == {"sha256"}:
            current = self.build(body=body)
            return current if essence["sha256"] == kubeapi.digest(dict(current)) else {}
        return essence

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        digest: Any = {"sha256": kubeapi.digest(dict(essence))}  # our essence format, not kopf's BodyEssence
        super().store(body=body, patch=patch, essence=digest)


def configure(settings: kopf.OperatorSettings) -> None:
    # Progress and diff-base in annotations: the status stays ours alone.
    settings.persistence.progress_storage = _TolerantProgressStorage(prefix="kpod.io")
    settings.persistence.diffbase_storage = _TolerantDiffBaseStorage(
        prefix="kpod.io", key="last-handled-configuration")
    # Only the agent's pods and DaemonSet, filtered by the API server; their
    # namespace is the fleet's choice, so it is checked per event.
    selector = f"{render.APP_LABEL}={render.AGENT_NAME}"
    for group, plural in (("", "pods"), ("apps", "daemonsets")):
        settings.watching.label_selectors[group, plural] = selector
    settings.posting.level = logging.WARNING


def _is_crd_of_interest(body: Any, **_: Any) -> bool:
    spec = body.get("spec") or {}
    return spec.get("group") in (model.GROUP, plan.MONITORING.split("/")[0])


def on_crd_event(memo: Any, event: Any, body: Any, **_: Any) -> None:
    """The Prometheus Operator CRDs appearing (or going) reconcile at once,
    not at the next resync; our own CRD's uid owns the cluster-scoped objects."""
    op: reconciler.Operator = memo.op
    spec = body.get("spec") or {}
    if spec.get("group") == model.GROUP:
        if (spec.get("names") or {}).get("plural") != model.PLURAL:
            return
        uid = None if event.get("type") == "DELETED" else (body.get("metadata") or {}).get("uid")
        if uid == op.crd_uid:
            return
        op.crd_uid = uid
    reconciler.reconcile_coalesced(op)


def register(registry: kopf.OperatorRegistry) -> None:
    """Attach the handlers to ``registry`` (a fresh one per test, the default in main)."""
    labels = {render.APP_LABEL: render.AGENT_NAME}
    for decorator in (kopf.on.resume, kopf.on.create, kopf.on.update):
        decorator(*CR, id="fleet", when=_is_fleet, registry=registry)(on_fleet)
    kopf.on.startup(id="resync", registry=registry)(start_resync)
    kopf.on.cleanup(id="resync", registry=registry)(stop_resync)
    kopf.on.event(*CR, id="override", when=_is_override, registry=registry)(on_override_event)
    kopf.on.event(*CR, id="fleet-deleted", when=_is_fleet, registry=registry)(on_fleet_deleted)
    kopf.on.event("", "v1", "pods", id="agent-pods", labels=labels,
                  when=_in_agent_namespace, registry=registry)(on_agent_event)
    kopf.on.event("apps", "v1", "daemonsets", id="agent-daemonset", labels=labels,
                  when=_in_agent_namespace, registry=registry)(on_agent_event)
    kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", id="crds",
                  when=_is_crd_of_interest, registry=registry)(on_crd_event)
