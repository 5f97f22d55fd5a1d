"""Pure status logic: rollout, conditions, agent report aggregation."""
from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from kpod_agent import contract
from kpod_operator import status

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
OK = status.ReconcileOutcome(True, "Reconciled", "config generation 7")


def _ds(generation: int = 2, observed: int = 2, desired: int = 3, updated: int = 3,
        available: int = 3, ready: int | None = None) -> dict[str, Any]:
    return {"metadata": {"generation": generation},
            "status": {"observedGeneration": observed, "desiredNumberScheduled": desired,
                       "updatedNumberScheduled": updated, "numberAvailable": available,
                       "numberReady": available if ready is None else ready}}


def _conds(st: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: f"{c['status']}/{c['reason']}" for c in st["conditions"]}


def _build(ds: dict[str, Any] | None, previous: dict[str, Any] | None = None, now: datetime.datetime = T0,
           reports: list[status.AgentReport] | None = None, outcome: status.ReconcileOutcome = OK
           ) -> dict[str, Any]:
    return status.build_status(previous, observed_generation=3, reconcile=outcome, config_generation=7,
                               ds=ds, reports=reports, now=now, stuck_after=60)


@pytest.mark.parametrize("ds, available, progressing", [
    (None, "False/DaemonSetMissing", "False/DaemonSetMissing"),
    (_ds(desired=0, updated=0, available=0), "False/NoNodesScheduled", "False/RolloutComplete"),
    (_ds(), "True/AllAvailable", "False/RolloutComplete"),
    (_ds(updated=1, available=2), "True/PartiallyAvailable", "True/RolloutInProgress"),
    (_ds(updated=0, available=0), "False/NoneAvailable", "True/RolloutInProgress"),
    # The controller has not seen the new template yet: not done, whatever the counts say.
    (_ds(generation=3, observed=2), "True/AllAvailable", "True/RolloutInProgress"),
])
def test_daemonset_status_to_conditions(ds: dict[str, Any] | None, available: str, progressing: str) -> None:
    conds = _conds(_build(ds))
    assert conds["Available"] == available
    assert conds["Progressing"] == progressing
    assert conds["Reconciled"] == "True/Reconciled"


def test_counts_are_copied() -> None:
    st = _build(_ds(desired=5, updated=4, available=3, ready=2))
    assert (st["desiredNumberScheduled"], st["updatedNumberScheduled"], st["numberAvailable"],
            st["numberReady"]) == (5, 4, 3, 2)
    assert st["observedGeneration"] == 3 and st["configGeneration"] == 7


def test_rollout_without_progress_past_the_timeout_is_stuck() -> None:
    ds = _ds(updated=1, available=2)
    first = _build(ds, now=T0)
    assert _conds(first)["Progressing"] == "True/RolloutInProgress"
    later = _build(ds, previous=first, now=T0 + datetime.timedelta(seconds=61))
    assert _conds(later)["Progressing"] == "False/RolloutStuck"
    assert _conds(later)["Degraded"] == "True/RolloutStuck"
    # Movement resets the clock.
    moved = _build(_ds(updated=2, available=2), previous=later, now=T0 + datetime.timedelta(seconds=62))
    assert _conds(moved)["Progressing"] == "True/RolloutInProgress"
    assert _conds(moved)["Degraded"] == "False/AsExpected"


def test_progress_clock_is_kept_while_nothing_moves() -> None:
    ds = _ds(updated=1, available=2)
    first = _build(ds, now=T0)
    second = _build(ds, previous=first, now=T0 + datetime.timedelta(seconds=30))
    assert second["rollout"]["since"] == first["rollout"]["since"]


def test_reconcile_failure_is_degraded_with_its_reason() -> None:
    bad = status.ReconcileOutcome(False, "InvalidSpec", "spec.syscalls: unknown")
    conds = _conds(_build(_ds(), outcome=bad))
    assert conds["Reconciled"] == "False/InvalidSpec"
    assert conds["Degraded"] == "False/InvalidSpec".replace("False", "True")


def test_transition_time_moves_only_when_status_flips() -> None:
    first = _build(_ds(), now=T0)
    same = _build(_ds(), previous=first, now=T0 + datetime.timedelta(seconds=100))
    assert first["conditions"] == same["conditions"]
    flipped = _build(_ds(updated=0, available=0), previous=same, now=T0 + datetime.timedelta(seconds=200))
    avail = next(c for c in flipped["conditions"] if c["type"] == "Available")
    reconciled = next(c for c in flipped["conditions"] if c["type"] == "Reconciled")
    assert avail["lastTransitionTime"] == "2026-01-01T12:03:20Z"
    assert reconciled["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert [c["type"] for c in flipped["conditions"]] == list(status.CONDITION_TYPES)


def _report(node: str, generation: int | None, time: str = "2026-01-01T00:00:00Z",
            **collectors: dict[str, Any]) -> status.AgentReport:
    states = {name: contract.CollectorStatus.model_validate(state)
              for name, state in (collectors or {"cpu": {"attached": True}}).items()}
    return status.AgentReport(pod=f"agent-{node}", node=node, generation=generation,
                              collectors=states, last_error=None, time=time)


def test_generations_7_7_6_make_2_of_3() -> None:
    fleet = status.aggregate_reports([_report("n1", 7), _report("n2", 7), _report("n3", 6)], 7, desired=3)
    assert fleet.nodes_applied == "2/3"
    assert fleet.stale == ["n3"]
    st = _build(_ds(), reports=[_report("n1", 7), _report("n2", 7), _report("n3", 6)])
    assert st["nodesApplied"] == "2/3"
    assert _conds(st)["ConfigApplied"] == "False/ApplyPending"
    all_on = _build(_ds(), reports=[_report("n1", 7), _report("n2", 7), _report("n3", 7)])
    assert _conds(all_on)["ConfigApplied"] == "True/AllNodesApplied"


def test_nodes_not_reporting_count_as_not_applied() -> None:
    fleet = status.aggregate_reports([_report("n1", 7)], 7, desired=3)
    assert fleet.nodes_applied == "1/3"


def test_newest_report_per_node_wins() -> None:
    old = _report("n1", 6, time="2026-01-01T00:00:00Z")
    new = _report("n1", 7, time="2026-01-01T00:01:00Z")
    assert status.aggregate_reports([new, old], 7, desired=1).nodes_applied == "1/1"


def test_collector_failures_are_named() -> None:
    failed = _report("n2", 7, cpu={"attached": True},
                     syscall={"attached": False, "error": "tracepoint syscalls:sys_enter_getppid: not found"},
                     tcpdrop={"attached": False})
    st = _build(_ds(), reports=[_report("n1", 7), failed])
    assert st["collectorFailures"] == [
        {"node": "n2", "collector": "syscall", "reason": "tracepoint syscalls:sys_enter_getppid: not found"},
        {"node": "n2", "collector": "tcpdrop", "reason": "not attached"},
    ]
    assert _conds(st)["Degraded"] == "True/CollectorsFailed"


def test_full_filter_map_says_map_full_on_which_node() -> None:
    full = _report("n2", 7, cpu={"attached": True},
                   syscall={"attached": True, "mapFull": {"map": "allowed_cgroups", "podsNotCounted": 12}})
    st = _build(_ds(), reports=[_report("n1", 7), full])
    assert _conds(st)["Degraded"] == "True/MapFull"
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert degraded["message"] == "map full on node n2 (syscall: 12 pods not counted); raise maxCgroups"
    assert st["collectorFailures"] == []
    # a failed collector is the worse news and is named first
    failed = _report("n3", 7, tcpdrop={"attached": False})
    assert _conds(_build(_ds(), reports=[full, failed]))["Degraded"] == "True/CollectorsFailed"


def _pod(annotation: Any) -> dict[str, Any]:
    anns = {} if annotation is None else {"kpod.io/agent-status": annotation}
    return {"metadata": {"name": "kpod-agent-x", "annotations": anns}, "spec": {"nodeName": "n9"}}


@pytest.mark.parametrize("annotation", [None, "", "not json", "[1, 2]", "42"])
def test_malformed_reports_are_ignored(annotation: Any) -> None:
    assert status.parse_report(_pod(annotation)) is None


def test_report_fields_are_sanitized() -> None:
    rep = status.parse_report(_pod(json.dumps({"generation": "7", "collectors": [1], "time": None})))
    assert rep is not None
    assert rep.generation is None and rep.collectors == {} and rep.node == "n9"
    good = status.parse_report(_pod(json.dumps({"node": "n1", "generation": 7,
                                                "collectors": {"cpu": {"attached": True}},
                                                "lastError": None, "time": "t"})))
    assert good == status.AgentReport(pod="kpod-agent-x", node="n1", generation=7,
                                      collectors={"cpu": contract.CollectorStatus(attached=True)},
                                      last_error=None, time="t")


def test_one_odd_field_does_not_hide_the_rest_of_a_report() -> None:
    """An agent of another version: unknown fields ignored, entries that do not fit dropped one by one."""
    rep = status.parse_report(_pod(json.dumps({
        "generation": 7, "futureField": {"x": 1},
        "collectors": {"cpu": {"attached": True, "interval": 15},
                       "syscall": {"attached": "no"},            # not a bool: this entry only is dropped
                       "tcpdrop": 5,                              # not an object
                       "memory": {"attached": False, "error": "boom", "mapFull": {"podsNotCounted": "12"}}},
        "discovery": {"pods": "many"}, "lastError": 3})))
    assert rep is not None and rep.generation == 7 and rep.node == "n9" and rep.last_error is None
    assert rep.collectors == {"cpu": contract.CollectorStatus(attached=True, interval=15.0)}
    # ... and what remains still reaches the fleet status.
    assert status.aggregate_reports([rep], 7, desired=1).nodes_applied == "1/1"


def test_an_agent_status_round_trips_through_the_annotation() -> None:
    written = contract.AgentStatus(
        node="n1", generation=4, profile="standard", time="t",
        collectors={"cpu": contract.CollectorStatus(attached=True, interval=15.0),
                    "syscall": contract.CollectorStatus(attached=True, interval=15.0, partial={"getppid": "gone"},
                                                        mapFull=contract.MapFull(map="allowed_cgroups",
                                                                                 podsNotCounted=2))},
        discovery=contract.DiscoveryStatus(mode="informer", synced=True, pods=3, cgroups=9))
    assert contract.parse_agent_status(written.to_json()) == written
    # Unset collector fields are left out of the text, not written as null.
    assert '"error"' not in written.to_json() and '"lastError":null' in written.to_json()
    rep = status.parse_report(_pod(written.to_json()))
    assert rep is not None and rep.collectors == written.collectors


def test_no_reports_yet() -> None:
    st = _build(_ds(), reports=None)
    assert _conds(st)["ConfigApplied"] == "False/NoReports"
    assert st["nodesApplied"] == "0/3"


@pytest.mark.parametrize("previous", [
    {"conditions": "garbage", "rollout": "x", "configGeneration": "abc"},
    {"conditions": [1, None, {"type": "Available"}], "rollout": {"since": 5}},
    "not a mapping",
])
def test_hand_edited_status_does_not_break_the_next_one(previous: Any) -> None:
    st = _build(_ds(), previous=previous)  # type: ignore[arg-type]
    assert [c["type"] for c in st["conditions"]] == list(status.CONDITION_TYPES)
    assert status.outcome_from_status(st) == OK


def test_hand_edited_daemonset_counts_read_as_zero() -> None:
    ds = {"metadata": {"generation": "x"}, "status": {"desiredNumberScheduled": "3", "numberAvailable": None,
                                                      "updatedNumberScheduled": True}}
    rollout = status.rollout_of(ds)
    assert rollout is not None and rollout.desired == 3 and rollout.available == 0 and rollout.updated == 0
