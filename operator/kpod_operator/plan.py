"""One reconcile, planned: the CRs and what was read of the cluster -> what to write. Pure.

``make`` picks the fleet profile, resolves the namespace overrides
(``tenancy``), renders the objects to apply and lists those to delete, and
gives every other CR its status. ``apply`` runs the steps and returns a
result per step; ``outcome`` turns the plan and those results into the
fleet's Reconciled condition. Nothing here reads the API or the clock.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
from typing import Any, Literal

from kpod_agent import config as agentconfig
from kpod_operator import model, render, status, tenancy

MONITORING = "monitoring.coreos.com/v1"

Verb = Literal["apply", "delete"]


@dataclasses.dataclass(frozen=True)
class Observed:
    """What one reconcile read before planning."""

    crs: list[dict[str, Any]]
    """Every KpodMetricsProfile, in every namespace."""
    now: datetime.datetime
    bound_agent_namespace: str | None = None
    """Where our ClusterRoleBinding grants the agents their rights (None: nowhere, or unreadable)."""
    running_config: str | None = None
    """The node config in the agents' ConfigMap, as text (None: no ConfigMap)."""
    monitoring_served: bool = False
    """Whether the Prometheus Operator's API is served."""
    rule_groups: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    crd_uid: str | None = None
    """Our CRD's uid: owner of the cluster-scoped objects (None: unknown, none set)."""
    dashboard_namespace: str | None = None
    """Where our ClusterRoleBinding records the dashboard ConfigMap (None: nowhere, or unreadable)."""
    dashboard: str | None = None
    """The dashboard JSON to provision (None: not wanted, or the asset is unreadable)."""
    pending_dashboard_namespaces: tuple[str, ...] = ()
    pending_agent_namespaces: tuple[str, ...] = ()
    """Old locations an earlier reconcile failed to clean up, as the binding records them."""

    @functools.cached_property
    def running(self) -> agentconfig.AgentConfig | None:
        """running_config parsed, once per reconcile (1,000 overrides: ~90 kB of YAML)."""
        return render.parse_running(self.running_config)


@dataclasses.dataclass(frozen=True)
class Step:
    verb: Verb
    obj: dict[str, Any]
    only_if_all_succeeded: bool = False
    """Skipped when any step before it failed: a record of cleanup done."""

    @property
    def ref(self) -> str:
        return f"{self.obj['kind']}/{self.obj['metadata']['name']}"


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What became of one step: created, updated, unchanged, deleted, absent
    (nothing of ours to delete), skipped (a step before it failed) or failed,
    with the API's error."""

    step: Step
    action: str
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclasses.dataclass(frozen=True)
class CrReport:
    """A CR that is not the fleet (second fleet, override): its verdict and status."""

    cr: dict[str, Any]
    outcome: status.ReconcileOutcome
    status: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Plan:
    fleet: dict[str, Any] | None
    """The fleet CR (the oldest in the operator's namespace), None without one."""
    reports: list[CrReport]
    """Statuses of the other CRs, written before the steps."""
    steps: list[Step]
    """Applies first (ConfigMap first of all), then deletes."""
    agent_namespace: str | None = None
    """The valid spec's agents' namespace; None keeps the current one."""
    decided: status.ReconcileOutcome | None = None
    """An outcome known without applying anything (a spec that cannot be rendered)."""
    floor: int = 0
    """configGeneration in the fleet's status: kept when the ConfigMap is not written."""
    generation: int = 0
    """configGeneration once the ConfigMap is written."""
    overrides: int | None = None
    """Overrides merged (None: not resolved)."""
    monitoring_pending: bool = False
    """ServiceMonitor/PrometheusRule wanted, their API not served."""


def pick_fleet(crs: list[dict[str, Any]], namespace: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The oldest live CR in ``namespace`` is the fleet; the others there conflict."""
    fleets = sorted((cr for cr in crs if (cr.get("metadata") or {}).get("namespace") == namespace
                     and not (cr.get("metadata") or {}).get("deletionTimestamp")), key=tenancy.creation_order)
    return (fleets[0] if fleets else None), fleets[1:]


def parse_spec(fleet: dict[str, Any] | None) -> model.FleetSpec | None:
    """The fleet's spec, None without a fleet or when it is invalid."""
    if fleet is None:
        return None
    try:
        return model.parse_fleet(fleet.get("spec"))
    except model.SpecError:
        return None


def running_overrides(running: agentconfig.AgentConfig | None) -> dict[str, agentconfig.NamespaceOverride]:
    """The overrides the agents run now (from the ConfigMap), {} if unreadable."""
    return dict(running.namespaceOverrides) if running is not None else {}


def _report(cr: dict[str, Any], outcome: status.ReconcileOutcome, now: datetime.datetime) -> CrReport:
    generation = (cr.get("metadata") or {}).get("generation")
    return CrReport(cr, outcome, status.conflict_status(status.previous_status(cr), generation, outcome, now))


def _conflicts(fleet: dict[str, Any], others: list[dict[str, Any]], namespace: str,
               now: datetime.datetime) -> list[CrReport]:
    outcome = status.ReconcileOutcome(
        False, "Conflict",
        f"{namespace}/{fleet['metadata']['name']} is the fleet profile; "
        f"only one is allowed in {namespace}, this one is ignored")
    return [_report(other, outcome, now) for other in others]


def _overrides(observed: Observed, namespace: str, spec: model.FleetSpec | None,
               ) -> tuple[dict[str, agentconfig.NamespaceOverride], list[CrReport]]:
    merged, verdicts = tenancy.resolve(observed.crs, namespace, spec, running_overrides(observed.running))
    return merged, [_report(v.cr, v.outcome, observed.now) for v in verdicts]


def _stale_dashboard_namespaces(observed: Observed, wanted: str | None) -> list[str]:
    """Where the binding says the dashboard was, or still is to be deleted
    from, unless it is wanted there (only ours is deleted: apply.delete_managed)."""
    places = {*observed.pending_dashboard_namespaces, observed.dashboard_namespace} - {None, wanted}
    return sorted(ns for ns in places if ns is not None)


def _stale_agent_namespaces(observed: Observed, wanted: str | None) -> list[str]:
    places = {*observed.pending_agent_namespaces, observed.bound_agent_namespace} - {None, wanted}
    return sorted(ns for ns in places if ns is not None)


def make(observed: Observed, namespace: str, cluster_name: str = "") -> Plan:
    """The whole reconcile of the fleet in ``namespace`` (the operator's) as data.

    A bad spec, or a node config the agents would refuse, gives a plan with
    no steps and that outcome: the last good workload keeps running."""
    fleet, others = pick_fleet(observed.crs, namespace)
    if fleet is None:
        # Namespaced objects beside the CR go with their owner (garbage
        # collector); those in the agents' namespace and the cluster-scoped
        # ones cannot be owned by it. Overrides still get told why nothing happens.
        stale = [render.dashboard_object(ns) for ns in _stale_dashboard_namespaces(observed, None)]
        stale += [obj for ns in _stale_agent_namespaces(observed, None) for obj in render.agent_objects(ns)]
        _, reports = _overrides(observed, namespace, None)
        # The binding records what is left to delete: it goes last, and only
        # once everything before it is gone.
        return Plan(None, reports, [Step("delete", obj) for obj in stale]
                    + [Step("delete", obj, only_if_all_succeeded=True)
                       for obj in render.cluster_scoped_objects(namespace)])
    reports = _conflicts(fleet, others, namespace, observed.now)
    floor = status.as_int(status.previous_status(fleet).get("configGeneration"))
    try:
        spec = model.parse_fleet(fleet.get("spec"))
    except model.SpecError as exc:
        return Plan(fleet, reports, [], decided=status.ReconcileOutcome(False, "InvalidSpec", str(exc)),
                    floor=floor, generation=floor)
    merged, verdicts = _overrides(observed, namespace, spec)
    reports += verdicts
    try:
        candidate = render.render_agent_config(spec, merged, 1, cluster_name)
    except agentconfig.ConfigError as exc:
        # Whatever the merge of valid CRs still gets wrong: reported, last good kept.
        return Plan(fleet, reports, [], agent_namespace=spec.agent.namespace, overrides=len(merged),
                    decided=status.ReconcileOutcome(False, "InvalidSpec", f"node config: {exc}"),
                    floor=floor, generation=floor)
    generation = render.next_generation(observed.running, candidate, floor)
    config = candidate.model_copy(update={"generation": generation})
    too_big = render.size_error(config.model_dump(mode="json", exclude_none=True),
                                agentconfig.MAX_DOCUMENT_BYTES, "the node config")
    if too_big:
        # The agent refuses a document this large (and so would the API
        # server, over 1 MiB): keep the running one.
        return Plan(fleet, reports, [], agent_namespace=spec.agent.namespace, overrides=len(merged),
                    decided=status.ReconcileOutcome(False, "InvalidSpec", too_big),
                    floor=floor, generation=floor)
    owner = render.owner_reference(fleet)
    objects = render.render_workload(namespace, spec, config, owner)
    if observed.crd_uid:
        # Cluster-scoped objects cannot have a namespaced owner: the CRD
        # owns them, so uninstalling (deleting the CRD) removes them even
        # when the operator is gone.
        for obj in objects:
            if "namespace" not in obj["metadata"]:
                obj["metadata"]["ownerReferences"] = [render.crd_owner_reference(observed.crd_uid)]
    wanted_dashboard = render.dashboard_namespace(spec)
    if wanted_dashboard is not None and observed.dashboard is not None:
        objects.append(render.render_dashboard(namespace, spec, owner, observed.dashboard))
    unwanted = render.unwanted_workload(spec)
    stale_dashboards = _stale_dashboard_namespaces(observed, wanted_dashboard)
    unwanted += [render.dashboard_object(ns) for ns in stale_dashboards]
    # The agents moved: the old namespace's workload goes once the new one is applied.
    stale_agents = _stale_agent_namespaces(observed, spec.agent.namespace)
    unwanted += [obj for ns in stale_agents for obj in render.agent_objects(ns)]
    cleanup_done: list[Step] = []
    if stale_dashboards or stale_agents:
        # The binding keeps the old places until their deletes succeed; then a
        # last step forgets them. A failed delete is retried, not lost.
        at = next(i for i, obj in enumerate(objects) if obj["kind"] == "ClusterRoleBinding")
        cleanup_done = [Step("apply", objects[at], only_if_all_succeeded=True)]
        objects[at] = render.with_pending(objects[at], stale_dashboards, stale_agents)
    if observed.monitoring_served:
        monitoring = render.render_monitoring(namespace, spec, owner, observed.rule_groups)
        objects += monitoring
        wanted = {(obj["kind"], obj["metadata"]["name"]) for obj in monitoring}
        unwanted += [obj for obj in render.monitoring_objects(namespace)
                     if (obj["kind"], obj["metadata"]["name"]) not in wanted]
    wants_monitoring = spec.serviceMonitor.enabled or spec.prometheusRule.enabled
    return Plan(fleet, reports,
                [Step("apply", obj) for obj in objects] + [Step("delete", obj) for obj in unwanted] + cleanup_done,
                agent_namespace=spec.agent.namespace, floor=floor, generation=generation,
                overrides=len(merged), monitoring_pending=wants_monitoring and not observed.monitoring_served)


def outcome(plan: Plan, results: list[StepResult]) -> tuple[status.ReconcileOutcome | None, int]:
    """The fleet's Reconciled outcome and the configGeneration to record.

    configGeneration is what the agents should run: it moves only once the
    ConfigMap is written. None without a fleet."""
    if plan.fleet is None:
        return None, 0
    if plan.decided is not None:
        return plan.decided, plan.floor
    failures = [f"{r.step.ref}: {r.error}" for r in results if r.failed]
    config_written = not any(r.failed and r.step.verb == "apply" and r.step.obj["kind"] == "ConfigMap"
                             for r in results)
    generation = plan.generation if config_written else plan.floor
    if failures:
        return status.ReconcileOutcome(False, "ApplyFailed", "; ".join(failures)), generation
    if plan.monitoring_pending:
        return status.ReconcileOutcome(
            True, "ServiceMonitorCRDNotInstalled",
            f"{MONITORING} is not served: ServiceMonitor/PrometheusRule will be created "
            f"when the Prometheus Operator CRDs appear"), generation
    return status.ReconcileOutcome(True, "Reconciled", f"config generation {plan.generation}"), generation
