"""Reconcile the fleet: read, plan (pure), apply, write the status.

All writes of one operator process go through ``Operator.lock``, so the
reconcile (CR events, resync) and the status refresh (pod and DaemonSet
events) never interleave their read-compute-write of the same CR status.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

from kpod_agent import contract
from kpod_operator import apply, model, plan, render, settings, status
from kpod_operator import clock as opclock
from kpod_operator import kube as kubeapi
from kpod_operator import metrics as opmetrics

log = logging.getLogger("kpod_operator")


class Coalescer:
    """Runs work now, or, when a run is already under way in another thread,
    once more after it: requests arriving meanwhile fold into that one pass
    (each pass reads everything afresh, so nothing is lost)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._running = False
        self._dirty = False

    def depth(self) -> int:
        """Passes running or asked for (0, 1 or 2)."""
        with self._guard:
            return int(self._running) + int(self._dirty)

    def run(self, work: Callable[[], Any]) -> None:
        with self._guard:
            if self._running:
                self._dirty = True
                return
            self._running = True
        try:
            while True:
                work()
                with self._guard:
                    if not self._dirty:
                        self._running = False
                        return
                    self._dirty = False
        except BaseException:
            with self._guard:
                self._running = False
            raise


@dataclasses.dataclass
class Operator:
    config: settings.OperatorConfig
    kube: kubeapi.Kube
    clock: opclock.Clock = dataclasses.field(default_factory=opclock.RealClock)
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)
    # Override specs already merged, to ignore the echo of our own status writes.
    seen_overrides: dict[tuple[str, str], Any] = dataclasses.field(default_factory=dict)
    # Status refreshes coalesce: a rollout over N nodes sends N pod events.
    refreshes: Coalescer = dataclasses.field(default_factory=Coalescer)
    # So do reconciles asked by override events: a burst of N override CRs
    # (or an operator restart, which replays every CR) costs about two
    # reconciles, not N, and does not hold N of kopf's worker threads.
    reconciles: Coalescer = dataclasses.field(default_factory=Coalescer)
    # Set by the resync loop: brings its next reconcile forward after a failure
    # in an event handler (kopf retries change handlers, never event handlers).
    wake_resync: Any = None
    failed: bool = False
    # The agents' namespace of the last fleet spec that parsed: used while the
    # current one is invalid, and to filter the agents' pod events.
    agent_namespace: str = model.AgentSpec().namespace
    metrics: opmetrics.OperatorMetrics = dataclasses.field(default_factory=opmetrics.OperatorMetrics)
    # uid of the KpodMetricsProfile CRD object: owner of the cluster-scoped
    # objects, so deleting the CRD removes them without the operator.
    crd_uid: str | None = None

    def __post_init__(self) -> None:
        self.kube.errors = self.metrics
        self.metrics.track_queue(lambda: self.reconciles.depth() + self.refreshes.depth())

    def retry_soon(self) -> None:
        self.failed = True
        if self.wake_resync is not None:
            self.wake_resync()


# ---- reading --------------------------------------------------------------

def _binding(op: Operator) -> dict[str, Any] | None:
    """Our ClusterRoleBinding: where the agents were granted their rights and
    where the dashboard was put, if anywhere."""
    return op.kube.get(kubeapi.object_path(render.cluster_scoped_objects(op.config.namespace)[0]))


def _with_binding(binding: dict[str, Any] | None, **read: Any) -> plan.Observed:
    """Observed, with what our ClusterRoleBinding records: where the agents
    and the dashboard are, and old places still to clean up."""
    return plan.Observed(
        bound_agent_namespace=render.bound_agent_namespace(binding),
        dashboard_namespace=render.recorded_dashboard_namespace(binding),
        pending_dashboard_namespaces=render.pending_namespaces(binding, render.PENDING_DASHBOARD_ANNOTATION),
        pending_agent_namespaces=render.pending_namespaces(binding, render.PENDING_AGENTS_ANNOTATION),
        **read)


def observe(op: Operator) -> plan.Observed:
    """What the plan needs, and no more: nothing beyond the CRs for a fleet
    whose spec is invalid."""
    crs = op.kube.list(apply.cr_path())
    now = op.clock.now()
    fleet, _ = plan.pick_fleet(crs, op.config.namespace)
    if fleet is None:
        try:
            binding = _binding(op)
        except kubeapi.ApiError as exc:
            log.warning("cannot read the agents' ClusterRoleBinding: %s", exc)
            binding = None
        return _with_binding(binding, crs=crs, now=now, crd_uid=op.crd_uid)
    spec = plan.parse_spec(fleet)
    if spec is None:
        return plan.Observed(crs, now, crd_uid=op.crd_uid)
    binding = _binding(op)
    cm = op.kube.get(kubeapi.collection_path("v1", "ConfigMap", spec.agent.namespace)
                     + f"/{render.CONFIGMAP_NAME}")
    served = op.kube.served(plan.MONITORING)
    return _with_binding(
        binding, crs=crs, now=now,
        dashboard=render.load_dashboard(op.config.dashboard_path) if spec.grafana.dashboard.enabled else None,
        running_config=((cm or {}).get("data") or {}).get(contract.CONFIG_KEY),
        monitoring_served=served,
        rule_groups=render.load_rule_groups(op.config.rules_path) if served else [],
        crd_uid=op.crd_uid)


def _agent_reports(op: Operator) -> list[status.AgentReport]:
    pods = op.kube.list(kubeapi.collection_path("v1", "Pod", op.agent_namespace),
                        label_selector=f"{render.APP_LABEL}={render.AGENT_NAME}")
    reports = []
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(render.APP_LABEL) != render.AGENT_NAME:
            continue
        rep = status.parse_report(pod)
        if rep is not None:
            reports.append(rep)
    return reports


def _daemonset(op: Operator) -> dict[str, Any] | None:
    return op.kube.get(kubeapi.collection_path("apps/v1", "DaemonSet", op.agent_namespace)
                       + f"/{render.AGENT_NAME}")


# ---- reconcile --------------------------------------------------------------

def reconcile(op: Operator) -> status.ReconcileOutcome | None:
    """One reconcile, timed and counted by result in the operator's metrics.

    Returns the fleet's outcome (None without a fleet CR); never raises for a
    bad spec or a failed write: those are in the status. A failed read, or
    a failed write of the fleet's status, raises ApiError."""
    with op.metrics.reconcile() as counted:
        outcome = _reconcile(op)
        counted["result"] = "no_fleet" if outcome is None else \
            opmetrics.RESULTS.get(outcome.reason, "success" if outcome.ok else "error")
        return outcome


def _reconcile(op: Operator) -> status.ReconcileOutcome | None:
    with op.lock:
        observed = observe(op)
        planned = plan.make(observed, op.config.namespace, op.config.cluster_name)
        op.metrics.fleets.set(0 if planned.fleet is None else 1)
        if planned.agent_namespace is not None:
            op.agent_namespace = planned.agent_namespace
        if planned.overrides is not None:
            op.metrics.overrides.set(planned.overrides)
        for rep in planned.reports:
            apply.report(op.kube, rep.cr, rep.outcome, rep.status, observed.now)
        results = apply.run(op.kube, planned.steps)
        if planned.fleet is None:
            for result in results:
                if result.failed:
                    log.warning("cannot delete %s: %s", result.step.ref, result.error)
            return None
        outcome, config_generation = plan.outcome(planned, results)
        assert outcome is not None
        _write_fleet_status(op, planned.fleet, outcome, config_generation)
        return outcome


def _write_fleet_status(op: Operator, fleet: dict[str, Any], outcome: status.ReconcileOutcome,
                        config_generation: int) -> None:
    """The fleet's status from the outcome and the agents as they are now."""
    now = op.clock.now()
    new = status.build_status(
        status.previous_status(fleet),
        observed_generation=(fleet.get("metadata") or {}).get("generation"),
        reconcile=outcome,
        config_generation=config_generation,
        ds=_daemonset(op),
        reports=_agent_reports(op),
        now=now,
        stuck_after=op.config.stuck_after_seconds,
    )
    op.metrics.observe_status(new)
    apply.report(op.kube, fleet, outcome, new, now, strict=True)


def refresh_status(op: Operator) -> None:
    """Status only (DaemonSet counts, agent reports); the spec is not re-rendered."""
    with op.lock:
        fleet, _ = plan.pick_fleet(op.kube.list(apply.cr_path(op.config.namespace)), op.config.namespace)
        if fleet is None:
            return
        spec = plan.parse_spec(fleet)
        if spec is not None:
            op.agent_namespace = spec.agent.namespace
        # else an invalid spec keeps the agents where they run
        previous = status.previous_status(fleet)
        outcome = status.outcome_from_status(previous)
        if outcome is None:  # not reconciled yet: the reconcile will write it all
            return
        _write_fleet_status(op, fleet, outcome, status.as_int(previous.get("configGeneration")))


def request_refresh(op: Operator) -> None:
    """Refresh the status, coalescing events that arrive meanwhile into one
    more pass: a burst of N pod events costs about two refreshes, not N."""
    op.refreshes.run(lambda: refresh_status(op))


def reconcile_coalesced(op: Operator) -> None:
    """Reconcile for a watch event, coalesced with the others; a failure
    brings the next resync forward (watch events are not retried)."""
    op.reconciles.run(lambda: _reconcile_once(op))


def _reconcile_once(op: Operator) -> None:
    try:
        outcome = reconcile(op)
    except kubeapi.ApiError as exc:
        log.warning("reconcile failed: %s; retrying soon", exc)
        op.retry_soon()
        return
    if outcome is not None and outcome.reason == "ApplyFailed":
        op.retry_soon()


# ---- resync -----------------------------------------------------------------

def retry_delay(retry: int, base: float, cap: float) -> float:
    """Delay before retry number ``retry`` (0 = the first): doubling, capped."""
    return min(cap, base * 2 ** min(max(retry, 0), 30))


async def resync_loop(op: Operator) -> None:
    """Reconcile every resync period; after a failure (here or in an event
    handler) sooner, with the delay doubling per failure up to the period."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    op.wake_resync = lambda: loop.call_soon_threadsafe(wake.set)
    retry = 0
    while True:
        period = op.config.resync_seconds
        delay = retry_delay(retry, op.config.retry_base_seconds, period) if op.failed else period
        if await op.clock.wait(wake, delay):
            # A failure elsewhere: wait the retry delay, not the period.
            wake.clear()
            continue
        op.failed = False
        try:
            outcome = await loop.run_in_executor(None, reconcile, op)
            failed = outcome is not None and outcome.reason == "ApplyFailed"
        except Exception:  # a resync failure must not end the loop
            log.exception("periodic reconcile failed")
            failed = True
        retry = retry + 1 if failed else 0
        op.failed = op.failed or failed
