"""Pure status logic: DaemonSet status + agent reports -> the CR's status.

Each condition has one reason per case and the counts in its message, so
`kubectl get kmp -o yaml` says what is wrong without reading logs.
"""
from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from kpod_agent import contract

CONDITION_TYPES = ("Reconciled", "Available", "Progressing", "Degraded", "ConfigApplied")
# metav1.Condition allows 32768 characters; a few KiB keep `kubectl get -o yaml`
# readable when a CR lists thousands of bad values.
MAX_MESSAGE = 4096


def short_message(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    cut = " ... (cut)"
    return message[:MAX_MESSAGE - len(cut)] + cut


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str

    def as_dict(self, now: str) -> dict[str, Any]:
        return {"type": self.type, "status": "True" if self.status else "False",
                "reason": self.reason, "message": short_message(self.message), "lastTransitionTime": now}


@dataclasses.dataclass(frozen=True)
class ReconcileOutcome:
    """What the last reconcile achieved; carried in the status between writers."""
    ok: bool
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class AgentReport:
    pod: str
    node: str
    generation: int | None
    collectors: Mapping[str, contract.CollectorStatus]
    last_error: str | None
    time: str


def as_int(value: Any, default: int = 0) -> int:
    """A count or generation read from an object someone may have hand-edited."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return default


def previous_status(cr: dict[str, Any]) -> dict[str, Any]:
    st = cr.get("status")
    return st if isinstance(st, dict) else {}


def now_iso(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_report(pod: dict[str, Any]) -> AgentReport | None:
    """One agent pod's status annotation -> report. An unreadable annotation
    is no report (the node counts as not applied); fields that do not fit
    are dropped: an agent of another version must not break the operator."""
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations")
    raw = annotations.get(contract.STATUS_ANNOTATION) if isinstance(annotations, dict) else None
    report = contract.parse_agent_status(raw if isinstance(raw, str) else None)
    if report is None:
        return None
    node = report.node or (pod.get("spec") or {}).get("nodeName") or meta.get("name", "?")
    return AgentReport(
        pod=str(meta.get("name", "")),
        node=str(node),
        generation=report.generation,
        collectors=report.collectors,
        last_error=report.lastError or None,
        time=report.time,
    )


@dataclasses.dataclass(frozen=True)
class FleetReport:
    applied: int
    desired: int
    failures: list[dict[str, str]]
    stale: list[str]  # nodes on another generation
    # Attached collectors whose cgroup filter map is full: pods go uncounted.
    map_full: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def nodes_applied(self) -> str:
        return f"{self.applied}/{self.desired}"


def aggregate_reports(reports: list[AgentReport], config_generation: int,
                      desired: int | None) -> FleetReport:
    """Nodes on the current generation, and collectors that failed where.

    One report per node (the newest): during a rollout the old and the new pod
    of a node may both report for a moment."""
    by_node: dict[str, AgentReport] = {}
    for rep in reports:
        old = by_node.get(rep.node)
        if old is None or rep.time >= old.time:
            by_node[rep.node] = rep
    applied = sum(1 for r in by_node.values() if r.generation == config_generation)
    failures = []
    map_full: list[dict[str, Any]] = []
    for node, rep in sorted(by_node.items()):
        for name, state in sorted(rep.collectors.items()):
            if not state.attached:
                failures.append({"node": node, "collector": name, "reason": state.error or "not attached"})
            if state.mapFull is not None:
                map_full.append({"node": node, "collector": name, "pods": state.mapFull.podsNotCounted})
    stale = sorted(n for n, r in by_node.items() if r.generation != config_generation)
    return FleetReport(applied=applied, desired=desired if desired is not None else len(by_node),
                       failures=failures, stale=stale, map_full=map_full)


@dataclasses.dataclass(frozen=True)
class Rollout:
    complete: bool
    desired: int
    updated: int
    ready: int
    available: int
    observed: bool  # the controller has seen the latest template


def rollout_of(ds: dict[str, Any] | None) -> Rollout | None:
    """kubectl's rule: done when the controller observed the latest generation
    and every scheduled pod is updated and available."""
    if ds is None:
        return None
    st = ds.get("status") or {}
    gen = as_int((ds.get("metadata") or {}).get("generation"))
    observed = as_int(st.get("observedGeneration")) >= gen
    desired = as_int(st.get("desiredNumberScheduled"))
    updated = as_int(st.get("updatedNumberScheduled"))
    available = as_int(st.get("numberAvailable"))
    ready = as_int(st.get("numberReady"))
    complete = observed and updated == desired and available == desired
    return Rollout(complete=complete, desired=desired, updated=updated, ready=ready,
                   available=available, observed=observed)


def track_progress(previous: dict[str, Any] | None, rollout: Rollout | None,
                   template_generation: int, now: datetime.datetime) -> dict[str, Any]:
    """Remember when the rollout last moved. A DaemonSet has no progress
    deadline of its own, so "stuck" is "no movement for longer than the timeout"."""
    marker = None if rollout is None else \
        f"{template_generation}:{rollout.observed}:{rollout.updated}:{rollout.available}:{rollout.desired}"
    previous = previous if isinstance(previous, dict) else {}
    if previous.get("marker") == marker and isinstance(previous.get("since"), str):
        return {"marker": marker, "since": previous["since"]}
    return {"marker": marker, "since": now_iso(now)}


def _seconds_since(stamp: str, now: datetime.datetime) -> float:
    try:
        then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return 0.0
    return (now - then).total_seconds()


def compute_conditions(
    reconcile: ReconcileOutcome,
    rollout: Rollout | None,
    progress: dict[str, Any],
    fleet: FleetReport | None,
    config_generation: int,
    now: datetime.datetime,
    stuck_after: float,
) -> list[Condition]:
    conds = [Condition("Reconciled", reconcile.ok, reconcile.reason, reconcile.message)]
    stuck = False
    if rollout is None:
        conds.append(Condition("Available", False, "DaemonSetMissing", "the agent DaemonSet does not exist"))
        conds.append(Condition("Progressing", False, "DaemonSetMissing", "the agent DaemonSet does not exist"))
    else:
        counts = (f"{rollout.available}/{rollout.desired} available, "
                  f"{rollout.updated}/{rollout.desired} updated")
        if rollout.desired == 0:
            conds.append(Condition("Available", False, "NoNodesScheduled", "no node runs the agent"))
        elif rollout.available == 0:
            conds.append(Condition("Available", False, "NoneAvailable", counts))
        elif rollout.available < rollout.desired:
            conds.append(Condition("Available", True, "PartiallyAvailable", counts))
        else:
            conds.append(Condition("Available", True, "AllAvailable", counts))
        if rollout.complete:
            conds.append(Condition("Progressing", False, "RolloutComplete", counts))
        else:
            idle = _seconds_since(progress.get("since", ""), now)
            stuck = idle > stuck_after
            if stuck:
                conds.append(Condition("Progressing", False, "RolloutStuck",
                                       f"no progress for {int(idle)}s: {counts}"))
            else:
                conds.append(Condition("Progressing", True, "RolloutInProgress", counts))
    if not reconcile.ok:
        degraded = Condition("Degraded", True, reconcile.reason, reconcile.message)
    elif stuck and rollout is not None:
        degraded = Condition("Degraded", True, "RolloutStuck", conds[-1].message)
    elif fleet is not None and fleet.failures:
        names = ", ".join(f"{f['collector']}@{f['node']}" for f in fleet.failures[:5])
        degraded = Condition("Degraded", True, "CollectorsFailed",
                             f"{len(fleet.failures)} collector(s) failed to load: {names}")
    elif fleet is not None and fleet.map_full:
        where = "; ".join(f"map full on node {f['node']} ({f['collector']}: {f['pods']} pods not counted)"
                          for f in fleet.map_full[:5])
        degraded = Condition("Degraded", True, "MapFull", f"{where}; raise maxCgroups")
    else:
        degraded = Condition("Degraded", False, "AsExpected", "")
    conds.append(degraded)
    if fleet is None:
        conds.append(Condition("ConfigApplied", False, "NoReports", "no agent has reported yet"))
    elif fleet.desired > 0 and fleet.applied >= fleet.desired:
        conds.append(Condition("ConfigApplied", True, "AllNodesApplied",
                               f"{fleet.nodes_applied} nodes run config generation {config_generation}"))
    else:
        stale = f"; behind: {', '.join(fleet.stale[:10])}" if fleet.stale else ""
        conds.append(Condition("ConfigApplied", False, "ApplyPending",
                               f"{fleet.nodes_applied} nodes run config generation {config_generation}{stale}"))
    return conds


def merge_conditions(old: list[dict[str, Any]] | None, new: list[Condition], now: str) -> list[dict[str, Any]]:
    """Every type present, in a fixed order; lastTransitionTime moves only
    when the status flips, so a steady fleet keeps its history readable."""
    old = old if isinstance(old, list) else []
    previous = {c.get("type"): c for c in old if isinstance(c, dict)}
    out = []
    for cond in new:
        item = cond.as_dict(now)
        prev = previous.get(cond.type)
        if prev is not None and prev.get("status") == item["status"] and prev.get("lastTransitionTime"):
            item["lastTransitionTime"] = prev["lastTransitionTime"]
        out.append(item)
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(out, key=lambda c: order.get(c["type"], len(order)))


def outcome_from_status(status: dict[str, Any] | None) -> ReconcileOutcome | None:
    conditions = (status or {}).get("conditions")
    for cond in conditions if isinstance(conditions, list) else []:
        if isinstance(cond, dict) and cond.get("type") == "Reconciled":
            return ReconcileOutcome(cond.get("status") == "True", str(cond.get("reason") or ""),
                                    str(cond.get("message") or ""))
    return None


def build_status(
    previous: dict[str, Any] | None,
    *,
    observed_generation: int | None,
    reconcile: ReconcileOutcome,
    config_generation: int,
    ds: dict[str, Any] | None,
    reports: list[AgentReport] | None,
    now: datetime.datetime,
    stuck_after: float,
) -> dict[str, Any]:
    """The whole status of a fleet CR, from fresh inputs and the previous status."""
    previous = previous if isinstance(previous, dict) else {}
    rollout = rollout_of(ds)
    template_gen = as_int(((ds or {}).get("metadata") or {}).get("generation"))
    progress = track_progress(previous.get("rollout"), rollout, template_gen, now)
    desired = rollout.desired if rollout is not None else None
    fleet = aggregate_reports(reports, config_generation, desired) if reports is not None else None
    conds = compute_conditions(reconcile, rollout, progress, fleet, config_generation, now, stuck_after)
    status: dict[str, Any] = {
        "observedGeneration": observed_generation,
        "configGeneration": config_generation,
        "desiredNumberScheduled": rollout.desired if rollout else 0,
        "updatedNumberScheduled": rollout.updated if rollout else 0,
        "numberReady": rollout.ready if rollout else 0,
        "numberAvailable": rollout.available if rollout else 0,
        "nodesApplied": fleet.nodes_applied if fleet else f"0/{desired or 0}",
        "collectorFailures": fleet.failures if fleet else [],
        "rollout": progress,
        "conditions": merge_conditions(previous.get("conditions"), conds, now_iso(now)),
    }
    return status


def conflict_status(previous: dict[str, Any] | None, observed_generation: int | None,
                    outcome: ReconcileOutcome, now: datetime.datetime) -> dict[str, Any]:
    """Status of a CR that is not acted on (second fleet CR, invalid override)."""
    conds = [Condition("Reconciled", outcome.ok, outcome.reason, outcome.message)]
    return {
        "observedGeneration": observed_generation,
        "conditions": merge_conditions((previous or {}).get("conditions"), conds, now_iso(now)),
    }
