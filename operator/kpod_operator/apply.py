"""Carry out a plan: each apply or delete step returns a result, never raises.

A failed step does not stop the others (a refused NetworkPolicy must not
hold back a new node config); the failures end up in the fleet's
Reconciled condition, computed by ``plan.outcome``.
"""
from __future__ import annotations

import datetime
import logging
from typing import Any

from kpod_operator import events, model, plan, status
from kpod_operator import kube as kubeapi

log = logging.getLogger("kpod_operator")


def cr_path(namespace: str | None = None, name: str | None = None) -> str:
    path = kubeapi.collection_path(f"{model.GROUP}/{model.VERSION}", model.KIND, namespace)
    return f"{path}/{name}" if name else path


def run_step(kube: kubeapi.Kube, step: plan.Step) -> plan.StepResult:
    try:
        if step.verb == "apply":
            action = kubeapi.apply(kube, step.obj)
        else:
            action = "deleted" if kubeapi.delete_managed(kube, step.obj) else "absent"
    except kubeapi.ApiError as exc:
        return plan.StepResult(step, "failed", str(exc))
    if action not in ("unchanged", "absent"):
        log.info("%s %s", action, step.ref)
    return plan.StepResult(step, action)


def run(kube: kubeapi.Kube, steps: list[plan.Step]) -> list[plan.StepResult]:
    """Every step in order, each whatever became of the ones before, except
    those that record cleanup as done: skipped after a failure."""
    results: list[plan.StepResult] = []
    for step in steps:
        if step.only_if_all_succeeded and any(r.failed for r in results):
            log.info("not recording cleanup in %s: a step before it failed", step.ref)
            results.append(plan.StepResult(step, "skipped"))
        else:
            results.append(run_step(kube, step))
    return results


def write_status(kube: kubeapi.Kube, cr: dict[str, Any], new: dict[str, Any]) -> bool:
    """Merge ``new`` into the CR's status, unless it holds it already."""
    old = status.previous_status(cr)
    if old == {**old, **new}:
        return False
    meta = cr["metadata"]
    kube.merge_patch(f"{cr_path(meta['namespace'], meta['name'])}/status", {"status": new})
    return True


def report(kube: kubeapi.Kube, cr: dict[str, Any], outcome: status.ReconcileOutcome,
           new_status: dict[str, Any], now: datetime.datetime, *, strict: bool = False) -> None:
    """Status of one CR, and an Event when its outcome is a new refusal.

    Unless ``strict`` a failed status write is logged only: one override's
    status must not hold up the others. The fleet's is strict: its failure
    is retried."""
    previous = status.outcome_from_status(status.previous_status(cr))
    try:
        write_status(kube, cr, new_status)
    except kubeapi.ApiError as exc:
        if strict:
            raise
        meta = cr.get("metadata") or {}
        log.warning("cannot write status of %s/%s: %s", meta.get("namespace"), meta.get("name"), exc)
    events.post_if_new(kube, cr, previous, outcome, now)
