"""An operator restart in the middle of a rollout or of a failed apply:
it resumes from what is in the cluster, creates nothing twice, rolls the
DaemonSet once, and reports the rollout from the DaemonSet's own status
(the "no progress since" clock included)."""
from __future__ import annotations

import time

from tests.reliability.operator_support import (  # noqa: F401  (fixtures)
    NS,
    Harness,
    op_cluster,
    op_harness,
    wait_for,
)

SPEC = {"profile": "standard", "syscalls": ["read", "write"]}


def _status(h: Harness) -> dict:
    return h.cr(NS, "default").get("status") or {}


def _image(h: Harness) -> str:
    return h.daemonset()["spec"]["template"]["spec"]["containers"][0]["image"]


def test_restart_mid_rollout_resumes_and_reports_it(op_harness: Harness) -> None:
    h = op_harness
    h.start()
    h.fleet_ready(SPEC)
    h.write_ds_status(desiredNumberScheduled=3, updatedNumberScheduled=3, numberAvailable=3, numberReady=3)
    wait_for(lambda: h.reason("default", "Progressing") == "False/RolloutComplete", what="first rollout done")
    h.apply_cr(NS, "default", {"agent": {"image": "kpod-agent:1.1"}})
    wait_for(lambda: _image(h) == "kpod-agent:1.1", what="new template")
    assert h.daemonset()["metadata"]["generation"] == 2
    # The controller has updated one node of three.
    h.write_ds_status(desiredNumberScheduled=3, updatedNumberScheduled=1, numberAvailable=2, numberReady=2)
    wait_for(lambda: h.reason("default", "Progressing") == "True/RolloutInProgress"
             and _status(h).get("updatedNumberScheduled") == 1, what="rollout in progress")
    since = h.condition(NS, "default", "Progressing")["lastTransitionTime"]
    counts = h.object_counts()
    cm_before = h.running_config()

    h.stop()
    # While the operator is away the rollout moves on by one node.
    h.write_ds_status(desiredNumberScheduled=3, updatedNumberScheduled=2, numberAvailable=2, numberReady=2)
    h.start()
    wait_for(lambda: _status(h).get("updatedNumberScheduled") == 2, what="progress seen after restart")
    assert h.reason("default", "Progressing") == "True/RolloutInProgress"
    assert "2/3 updated" in h.condition(NS, "default", "Progressing")["message"]
    assert h.reason("default", "Available") == "True/PartiallyAvailable"
    # Still the same rollout: its condition did not flip, nothing was rewritten.
    assert h.condition(NS, "default", "Progressing")["lastTransitionTime"] == since
    assert h.daemonset()["metadata"]["generation"] == 2
    assert h.running_config() == cm_before
    assert h.object_counts() == counts and set(counts.values()) == {1}

    h.write_ds_status(desiredNumberScheduled=3, updatedNumberScheduled=3, numberAvailable=3, numberReady=3)
    wait_for(lambda: h.reason("default", "Progressing") == "False/RolloutComplete", what="rollout done")
    assert h.reason("default", "Available") == "True/AllAvailable"
    assert h.reason("default", "Degraded") == "False/AsExpected"
    assert h.daemonset()["metadata"]["generation"] == 2


def test_restart_keeps_the_no_progress_clock(op_harness: Harness) -> None:
    """A rollout that did not move while the operator was away is as old as it
    was: the restart neither resets nor invents progress."""
    h = op_harness
    h.start()
    h.fleet_ready(SPEC)
    h.write_ds_status(desiredNumberScheduled=3, updatedNumberScheduled=1, numberAvailable=1, numberReady=1)
    # The condition is already "in progress" before the DaemonSet reports: wait for its counts.
    wait_for(lambda: h.reason("default", "Progressing") == "True/RolloutInProgress"
             and _status(h).get("updatedNumberScheduled") == 1, what="rolling")
    started = _status(h)["rollout"]["since"]
    h.stop()
    h.clock.advance(h.config.stuck_after_seconds + 1)
    h.start()
    wait_for(lambda: h.reason("default", "Progressing") == "False/RolloutStuck", what="stuck after restart")
    assert _status(h)["rollout"]["since"] == started
    assert h.reason("default", "Degraded") == "True/RolloutStuck"


def test_restart_after_a_half_applied_change_finishes_it_once(op_harness: Harness) -> None:
    """The ConfigMap got written, the DaemonSet patch failed, then the operator
    went away: the next one applies the rest, once, and announces the config."""
    h = op_harness
    h.start()
    h.fleet_ready(SPEC)
    broken = h.cluster.inject("daemonsets", {"PATCH"}, 500, 10_000)
    h.apply_cr(NS, "default", {"syscalls": ["futex"], "agent": {"image": "kpod-agent:1.1"}})
    wait_for(lambda: h.reason("default", "Reconciled") == "False/ApplyFailed", what="DaemonSet refused")
    assert "DaemonSet/kpod-agent" in h.condition(NS, "default", "Reconciled")["message"]
    assert h.running_config()[1] == 2  # the config went out first
    h.stop()
    h.cluster.heal(broken)
    since = time.monotonic()
    h.start()
    wait_for(lambda: _image(h) == "kpod-agent:1.1"
             and (h.reason("default", "Reconciled") or "").startswith("True/"), what="finished after restart")
    assert h.daemonset()["metadata"]["generation"] == 2
    assert len(h.cluster.writes("daemonsets", since=since)) == 1
    assert h.running_config()[1] == 2 and _status(h)["configGeneration"] == 2
    assert h.node_config().syscalls == ["futex"]
    assert set(h.object_counts().values()) == {1}


def _reconciles(h: Harness, since: float) -> int:
    """Reconciles run by the operator: each lists the CRs of all namespaces once."""
    return sum(1 for r in h.cluster.requests()
               if r.time >= since and r.user_agent.startswith("OpenAPI") and r.method == "GET"
               and r.path == "/apis/kpod.io/v1alpha1/kpodmetricsprofiles" and not r.query.get("watch"))


def test_a_burst_of_overrides_and_a_restart_cost_a_few_reconciles_not_one_each(op_harness: Harness) -> None:
    """A hundred override CRs applied at once, then an operator restart (every
    CR arrives again as an event): all are merged and reported, with a few
    full reconciles rather than one per event, and the operator stops at once."""
    h = op_harness
    h.config.resync_seconds = 60.0
    h.start()
    h.fleet_ready(SPEC)
    count = 100
    since = time.monotonic()
    for i in range(count):
        h.kube.create({"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile",
                       "metadata": {"name": "metrics", "namespace": f"team-{i:03d}"},
                       "spec": {"profile": "minimal"}})

    def all_merged() -> bool:
        crs = [cr for cr in h.kube.list("/apis/kpod.io/v1alpha1/kpodmetricsprofiles")
               if cr["metadata"]["namespace"] != NS]
        return len(h.node_config().namespaceOverrides) == count and all(
            (cr.get("status") or {}).get("conditions", [{}])[0].get("reason") == "Merged" for cr in crs)

    wait_for(all_merged, timeout=30, what="all overrides merged")
    time.sleep(0.5)  # stragglers
    assert _reconciles(h, since) <= count // 4, _reconciles(h, since)
    generation = h.running_config()[1]

    h.stop()
    since = time.monotonic()
    h.start()
    time.sleep(2.0)
    assert _reconciles(h, since) <= count // 4, _reconciles(h, since)
    assert all_merged()
    assert h.running_config()[1] == generation  # a restart changes nothing
    stopping = time.monotonic()
    h.stop()
    assert time.monotonic() - stopping < 10
