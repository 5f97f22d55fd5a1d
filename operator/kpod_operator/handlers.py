"""Thin kopf handlers: read, render (pure), apply, write status.

All writes of one operator process go through ``Operator.lock``, so the
reconcile (CR events, timer) and the status refresh (pod and DaemonSet events)
never interleave their read-compute-write of the same CR status.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import pathlib
import threading
from collections.abc import Callable
from typing import Any

import kopf

from kpod_agent import config as agentconfig
from kpod_agent import contract
from kpod_operator import events, model, render, status, tenancy
from kpod_operator import kube as kubeapi
from kpod_operator import metrics as opmetrics

log = logging.getLogger("kpod_operator")

CR = (model.GROUP, model.VERSION, model.PLURAL)
MONITORING = "monitoring.coreos.com/v1"


@dataclasses.dataclass
class OperatorConfig:
    namespace: str = "kpod-system"
    """Where the fleet CR, the DaemonSet, ConfigMap and Service live."""
    resync_seconds: float = 30.0
    """Timer period: DaemonSet rollout check, drift repair, late Prometheus Operator CRDs."""
    stuck_after_seconds: float = 600.0
    """A rollout with no movement for this long is reported as RolloutStuck."""
    retry_base_seconds: float = 1.0
    """First retry of a change whose API calls failed (409, 5xx, timeout); the
    delay doubles per retry up to resync_seconds, so a passing conflict heals
    in a second and a broken API server is not hammered."""
    rules_path: pathlib.Path = render.RULES_ASSET
    cluster_name: str = ""


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
    config: OperatorConfig
    kube: kubeapi.Kube
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)
    # Override specs already merged, to ignore the echo of our own status writes.
    seen_overrides: dict[tuple[str, str], Any] = dataclasses.field(default_factory=dict)
    # Status refreshes coalesce: a rollout over N nodes sends N pod events.
    refreshes: "Coalescer" = dataclasses.field(default_factory=lambda: Coalescer())
    # So do reconciles asked by override events: a burst of N override CRs
    # (or an operator restart, which replays every CR) costs about two
    # reconciles, not N, and does not hold N of kopf's worker threads.
    reconciles: "Coalescer" = dataclasses.field(default_factory=lambda: Coalescer())
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


def _cr_path(namespace: str | None = None, name: str | None = None) -> str:
    path = kubeapi.collection_path(f"{model.GROUP}/{model.VERSION}", model.KIND, namespace)
    return f"{path}/{name}" if name else path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _write_status(op: Operator, cr: dict[str, Any], new: dict[str, Any]) -> bool:
    old = status.previous_status(cr)
    if old == {**old, **new}:
        return False
    meta = cr["metadata"]
    op.kube.merge_patch(f"{_cr_path(meta['namespace'], meta['name'])}/status", {"status": new})
    return True


def _fleet_order(cr: dict[str, Any]) -> tuple[str, str]:
    meta = cr.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))


def _active_fleet(op: Operator) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The oldest CR in the operator's namespace is the fleet; others conflict."""
    fleets = sorted(op.kube.list(_cr_path(op.config.namespace)), key=_fleet_order)
    fleets = [f for f in fleets if not (f.get("metadata") or {}).get("deletionTimestamp")]
    return (fleets[0] if fleets else None), fleets[1:]


def _agent_namespace(op: Operator, fleet: dict[str, Any]) -> str:
    try:
        op.agent_namespace = model.parse_fleet(fleet.get("spec")).agent.namespace
    except model.SpecError:
        pass  # an invalid spec keeps the agents where they run
    return op.agent_namespace


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


def _previous_agent_namespace(op: Operator) -> str | None:
    """Where the agents were granted their rights (our ClusterRoleBinding), if anywhere."""
    path = kubeapi.object_path(render.cluster_scoped_objects(op.config.namespace)[0])
    return render.bound_agent_namespace(op.kube.get(path))


def _delete_all(op: Operator, objects: list[dict[str, Any]]) -> list[str]:
    """Delete what we made of ``objects``; the failures, as messages."""
    failures = []
    for obj in objects:
        try:
            if kubeapi.delete_managed(op.kube, obj):
                log.info("deleted %s/%s", obj["kind"], obj["metadata"]["name"])
        except kubeapi.ApiError as exc:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc}")
    return failures


def _running_overrides(config_text: str | None) -> dict[str, agentconfig.NamespaceOverride]:
    """The overrides the agents run now (from the ConfigMap), {} if unreadable."""
    if not config_text:
        return {}
    try:
        return dict(agentconfig.parse_config(config_text).namespaceOverrides)
    except agentconfig.ConfigError:
        return {}


def _report(op: Operator, cr: dict[str, Any], outcome: status.ReconcileOutcome,
            new_status: dict[str, Any]) -> None:
    """Status of one CR, and an Event when its outcome is a new refusal.
    Failures are logged only: one CR's status must not hold up the others."""
    previous = status.outcome_from_status(status.previous_status(cr))
    meta = cr.get("metadata") or {}
    try:
        _write_status(op, cr, new_status)
    except kubeapi.ApiError as exc:
        log.warning("cannot write status of %s/%s: %s", meta.get("namespace"), meta.get("name"), exc)
    events.post_if_new(op.kube, cr, previous, outcome)


def _gather_overrides(op: Operator, fleet: model.FleetSpec | None,
                      running: dict[str, agentconfig.NamespaceOverride] | None = None,
                      ) -> dict[str, agentconfig.NamespaceOverride]:
    """Overrides to render by namespace (tenancy.resolve); each CR gets its own verdict."""
    overrides, verdicts = tenancy.resolve(op.kube.list(_cr_path()), op.config.namespace, fleet, running)
    for verdict in verdicts:
        cr = verdict.cr
        _report(op, cr, verdict.outcome, status.conflict_status(
            status.previous_status(cr), (cr.get("metadata") or {}).get("generation"), verdict.outcome, _now()))
    return overrides


def reconcile(op: Operator) -> status.ReconcileOutcome | None:
    """One reconcile, timed and counted by result in the operator's metrics."""
    with op.metrics.reconcile() as counted:
        outcome = _reconcile(op)
        counted["result"] = "no_fleet" if outcome is None else \
            opmetrics.RESULTS.get(outcome.reason, "success" if outcome.ok else "error")
        return outcome


def _reconcile(op: Operator) -> status.ReconcileOutcome | None:
    """Converge the fleet: node config, agent workload, monitoring objects, status.

    Returns the fleet's outcome (None without a fleet CR); never raises for a
    bad spec or a failed write: those are in the status."""
    with op.lock:
        fleet, others = _active_fleet(op)
        op.metrics.fleets.set(0 if fleet is None else 1)
        for other in others:
            meta = other["metadata"]
            outcome = status.ReconcileOutcome(
                False, "Conflict",
                f"{op.config.namespace}/{fleet['metadata']['name']} is the fleet profile; "
                f"only one is allowed in {op.config.namespace}, this one is ignored")
            _report(op, other, outcome, status.conflict_status(status.previous_status(other),
                                                               meta.get("generation"), outcome, _now()))
        if fleet is None:
            # Namespaced objects beside the CR go with their owner (garbage
            # collector); those in the agents' namespace and the cluster-scoped
            # ones cannot be owned by it.
            try:
                previous_ns = _previous_agent_namespace(op)
            except kubeapi.ApiError as exc:
                log.warning("cannot read the agents' ClusterRoleBinding: %s", exc)
                previous_ns = None
            stale = render.agent_objects(previous_ns) if previous_ns else []
            for failure in _delete_all(op, stale + render.cluster_scoped_objects(op.config.namespace)):
                log.warning("cannot delete %s", failure)
            # Overrides without a fleet still get told why nothing happens.
            _gather_overrides(op, None)
            return None
        previous = status.previous_status(fleet)
        floor = status.as_int(previous.get("configGeneration"))
        try:
            spec = model.parse_fleet(fleet.get("spec"))
        except model.SpecError as exc:
            # Keep the last good workload running; only say what is wrong.
            outcome = status.ReconcileOutcome(False, "InvalidSpec", str(exc))
            _refresh(op, fleet, outcome, floor)
            return outcome
        ns = op.config.namespace
        op.agent_namespace = spec.agent.namespace
        previous_ns = _previous_agent_namespace(op)
        cm_path = kubeapi.collection_path("v1", "ConfigMap", spec.agent.namespace) + f"/{render.CONFIGMAP_NAME}"
        current_cm = op.kube.get(cm_path)
        current_text = ((current_cm or {}).get("data") or {}).get(contract.CONFIG_KEY)
        overrides = _gather_overrides(op, spec, _running_overrides(current_text))
        op.metrics.overrides.set(len(overrides))
        owner = render.owner_reference(fleet)
        try:
            candidate = render.render_agent_config(spec, overrides, 1, op.config.cluster_name)
        except agentconfig.ConfigError as exc:
            # Whatever the merge of valid CRs still gets wrong: reported, last good kept.
            outcome = status.ReconcileOutcome(False, "InvalidSpec", f"node config: {exc}")
            _refresh(op, fleet, outcome, floor)
            return outcome
        generation = render.next_generation(current_text, candidate, floor)
        config = candidate.model_copy(update={"generation": generation})
        too_big = render.size_error(config.model_dump(mode="json", exclude_none=True),
                                    agentconfig.MAX_DOCUMENT_BYTES, "the node config")
        if too_big:
            # The agent refuses a document this large (and so would the API
            # server, over 1 MiB): keep the running one.
            outcome = status.ReconcileOutcome(False, "InvalidSpec", too_big)
            _refresh(op, fleet, outcome, floor)
            return outcome
        objects = render.render_workload(ns, spec, config, owner)
        if op.crd_uid:
            # Cluster-scoped objects cannot have a namespaced owner: the CRD
            # owns them, so uninstalling (deleting the CRD) removes them even
            # when the operator is gone.
            for obj in objects:
                if "namespace" not in obj["metadata"]:
                    obj["metadata"]["ownerReferences"] = [render.crd_owner_reference(op.crd_uid)]
        wants_monitoring = spec.serviceMonitor.enabled or spec.prometheusRule.enabled
        monitoring_served = op.kube.served(MONITORING)
        unwanted = render.unwanted_workload(spec)
        if previous_ns and previous_ns != spec.agent.namespace:
            # The agents moved: the old namespace's workload goes once the new one is applied.
            unwanted += render.agent_objects(previous_ns)
        if monitoring_served:
            monitoring = render.render_monitoring(ns, spec, owner, render.load_rule_groups(op.config.rules_path))
            objects += monitoring
            wanted = {(obj["kind"], obj["metadata"]["name"]) for obj in monitoring}
            unwanted += [obj for obj in render.monitoring_objects(ns)
                         if (obj["kind"], obj["metadata"]["name"]) not in wanted]
        failures = []
        config_written = True
        for obj in objects:
            try:
                action = kubeapi.apply(op.kube, obj)
            except kubeapi.ApiError as exc:
                failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc}")
                config_written = config_written and obj["kind"] != "ConfigMap"
                continue
            if action != "unchanged":
                log.info("%s %s/%s", action, obj["kind"], obj["metadata"]["name"])
        # Switched off in the spec, or left behind by a move: remove what we made.
        failures += _delete_all(op, unwanted)
        if failures:
            outcome = status.ReconcileOutcome(False, "ApplyFailed", "; ".join(failures))
        elif wants_monitoring and not monitoring_served:
            outcome = status.ReconcileOutcome(
                True, "ServiceMonitorCRDNotInstalled",
                f"{MONITORING} is not served: ServiceMonitor/PrometheusRule will be created "
                f"when the Prometheus Operator CRDs appear")
        else:
            outcome = status.ReconcileOutcome(True, "Reconciled", f"config generation {generation}")
        # configGeneration is what the agents should run: only once it is written.
        _refresh(op, fleet, outcome, generation if config_written else floor)
        return outcome


def _refresh(op: Operator, fleet: dict[str, Any], outcome: status.ReconcileOutcome,
             config_generation: int) -> None:
    new = status.build_status(
        status.previous_status(fleet),
        observed_generation=(fleet.get("metadata") or {}).get("generation"),
        reconcile=outcome,
        config_generation=config_generation,
        ds=_daemonset(op),
        reports=_agent_reports(op),
        now=_now(),
        stuck_after=op.config.stuck_after_seconds,
    )
    op.metrics.observe_status(new)
    previous = status.outcome_from_status(status.previous_status(fleet))
    _write_status(op, fleet, new)
    events.post_if_new(op.kube, fleet, previous, outcome)


def refresh_status(op: Operator) -> None:
    """Status only (DaemonSet counts, agent reports); the spec is not re-rendered."""
    with op.lock:
        fleet, _ = _active_fleet(op)
        if fleet is None:
            return
        _agent_namespace(op, fleet)
        previous = status.previous_status(fleet)
        outcome = status.outcome_from_status(previous)
        if outcome is None:  # not reconciled yet: the reconcile will write it all
            return
        _refresh(op, fleet, outcome, status.as_int(previous.get("configGeneration")))


# ---- kopf wiring -------------------------------------------------------------

def _is_fleet(namespace: str | None, memo: Any, **_: Any) -> bool:
    return namespace == memo.op.config.namespace


def _is_override(namespace: str | None, memo: Any, **_: Any) -> bool:
    return namespace != memo.op.config.namespace


def _in_agent_namespace(namespace: str | None, memo: Any, **_: Any) -> bool:
    return namespace == memo.op.agent_namespace


def retry_delay(retry: int, base: float, cap: float) -> float:
    """Delay before retry number ``retry`` (0 = the first): doubling, capped."""
    return min(cap, base * 2 ** min(max(retry, 0), 30))


def on_fleet(memo: Any, retry: int = 0, **_: Any) -> None:
    op: Operator = memo.op
    delay = retry_delay(retry, op.config.retry_base_seconds, op.config.resync_seconds)
    try:
        outcome = reconcile(op)
    except kubeapi.ApiError as exc:
        # A read or a status write failed: retried like a failed apply, not
        # after kopf's default minute.
        raise kopf.TemporaryError(f"API error: {exc}", delay=delay) from None
    # kopf retries temporary failures and records permanent ones per generation.
    if outcome is not None and outcome.reason == "InvalidSpec":
        raise kopf.PermanentError(outcome.message)
    if outcome is not None and outcome.reason == "ApplyFailed":
        raise kopf.TemporaryError(outcome.message, delay=delay)


def on_override_event(memo: Any, event: dict[str, Any], namespace: str, name: str, **_: Any) -> None:
    op: Operator = memo.op
    body = event.get("object") or {}
    key = (namespace, name)
    deleted = event.get("type") == "DELETED" or bool((body.get("metadata") or {}).get("deletionTimestamp"))
    marker = None if deleted else body.get("spec")
    if key in op.seen_overrides and op.seen_overrides[key] == marker:
        return  # our own status write, or nothing new
    _reconcile_from_event(op)
    op.seen_overrides[key] = marker
    if deleted:
        op.seen_overrides.pop(key, None)


def on_fleet_deleted(memo: Any, event: dict[str, Any], **_: Any) -> None:
    # A conflicting fleet CR takes over when the active one goes away.
    if event.get("type") == "DELETED":
        _reconcile_from_event(memo.op)


def _reconcile_from_event(op: Operator) -> None:
    """Reconcile for a watch event, coalesced with the others."""
    op.reconciles.run(lambda: _reconcile_once_from_event(op))


def _reconcile_once_from_event(op: Operator) -> None:
    try:
        outcome = reconcile(op)
    except kubeapi.ApiError as exc:
        log.warning("reconcile failed: %s; retrying soon", exc)
        op.retry_soon()
        return
    if outcome is not None and outcome.reason == "ApplyFailed":
        op.retry_soon()


def request_refresh(op: Operator) -> None:
    """Refresh the status, coalescing events that arrive meanwhile into one
    more pass: a burst of N pod events costs about two refreshes, not N."""
    op.refreshes.run(lambda: refresh_status(op))


def on_agent_event(memo: Any, **_: Any) -> None:
    try:
        request_refresh(memo.op)
    except kubeapi.ApiError as exc:
        log.warning("status refresh failed: %s; retrying soon", exc)
        memo.op.retry_soon()


async def _resync_loop(op: Operator) -> None:
    """Reconcile every resync period; after a failure (here or in an event
    handler) sooner, with the delay doubling per failure up to the period."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    op.wake_resync = lambda: loop.call_soon_threadsafe(wake.set)
    retry = 0
    while True:
        period = op.config.resync_seconds
        delay = retry_delay(retry, op.config.retry_base_seconds, period) if op.failed else period
        try:
            await asyncio.wait_for(wake.wait(), delay)
        except asyncio.TimeoutError:
            pass
        else:  # a failure elsewhere: wait the retry delay, not the period
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


async def start_resync(memo: Any, **_: Any) -> None:
    """One operator-wide resync (rollout check, drift, late Prometheus Operator
    CRDs) instead of a kopf timer: timers make kopf put a finalizer on every
    CR, and then deleting a CR would hang whenever the operator is down."""
    memo.resync_task = asyncio.create_task(_resync_loop(memo.op), name="kpod-resync")


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
            essence = super().fetch(body=body)
        except ValueError:
            return None
        if not isinstance(essence, dict):
            return None
        if set(essence) == {"sha256"}:
            current = self.build(body=body)
            return current if essence["sha256"] == kubeapi.digest(dict(current)) else {}
        return essence

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        super().store(body=body, patch=patch, essence={"sha256": kubeapi.digest(dict(essence))})


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
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
    return spec.get("group") in (model.GROUP, MONITORING.split("/")[0])


def on_crd_event(memo: Any, event: dict[str, Any], body: Any, **_: Any) -> None:
    """The Prometheus Operator CRDs appearing (or going) reconcile at once,
    not at the next resync; our own CRD's uid owns the cluster-scoped objects."""
    op: Operator = memo.op
    spec = body.get("spec") or {}
    if spec.get("group") == model.GROUP:
        if (spec.get("names") or {}).get("plural") != model.PLURAL:
            return
        uid = None if event.get("type") == "DELETED" else (body.get("metadata") or {}).get("uid")
        if uid == op.crd_uid:
            return
        op.crd_uid = uid
    _reconcile_from_event(op)


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
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
