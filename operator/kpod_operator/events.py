"""Kubernetes Events on a KpodMetricsProfile for every refusal, beside its condition.

`kubectl describe kmp` and `kubectl get events` show why a CR does nothing,
without reading the operator's log. One event per change of the Reconciled
condition (reason or message), not per reconcile: the resync would repeat
them every period, and the previous outcome is read from the CR's own
status, so an operator restart does not repeat them either.
"""
from __future__ import annotations

import datetime
import logging
import socket
from typing import Any

from kpod_operator import kube as kubeapi
from kpod_operator import model, status

log = logging.getLogger("kpod_operator")

COMPONENT = "kpod-operator"
# Reasons that mean "this CR, or this change of it, is not in effect".
REFUSALS = frozenset({"InvalidSpec", "Conflict", "ApplyFailed", "OverBudget", "NamespaceExcluded"})
# core/v1 Event.message is cut by kubectl at 1 KiB; the condition has the whole text.
MAX_MESSAGE = 1024


def should_post(previous: status.ReconcileOutcome | None, outcome: status.ReconcileOutcome) -> bool:
    if outcome.reason not in REFUSALS:
        return False
    return previous is None or (previous.reason, previous.message) != (outcome.reason, outcome.message)


def render_event(cr: dict[str, Any], outcome: status.ReconcileOutcome, now: str,
                 instance: str) -> dict[str, Any]:
    """A core/v1 Event (what kopf and kubectl read) about ``cr``."""
    meta = cr.get("metadata") or {}
    message = outcome.message if len(outcome.message) <= MAX_MESSAGE else \
        outcome.message[:MAX_MESSAGE - 10] + " ... (cut)"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": f"{model.GROUP}/{model.VERSION}",
            "kind": model.KIND,
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": outcome.reason,
        "message": message,
        "type": "Warning",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def post_if_new(kube: kubeapi.Kube, cr: dict[str, Any], previous: status.ReconcileOutcome | None,
                outcome: status.ReconcileOutcome, now: datetime.datetime | None = None) -> bool:
    """Post the event of ``outcome`` unless the CR already said so. Never raises:
    an event is a courtesy, the condition is the record."""
    if not should_post(previous, outcome):
        return False
    event = render_event(cr, outcome, status.now_iso(now), socket.gethostname())
    try:
        kube.request("POST", f"/api/v1/namespaces/{event['metadata']['namespace']}/events", body=event)
    except kubeapi.ApiError as exc:
        log.warning("cannot post event %s on %s/%s: %s", outcome.reason,
                    event["metadata"]["namespace"], event["involvedObject"]["name"], exc)
        return False
    return True
