"""API errors while the operator writes: 409 conflicts, 500s, timeouts (a
slow answer the server still commits after the client gave up). Each is
retried with a growing delay, and the objects end up right: one of each,
the node config written once per change, its generation raised once.

The resync is set far beyond the tests' waits, so recovery can only come
from the retries of the failed change itself.
"""
from __future__ import annotations

import itertools
import time

from tests.reliability.operator_support import (
    AGENTS,
    NS,
    Harness,
    wait_for,
)

SPEC = {"profile": "standard", "syscalls": ["read", "write"]}


def _start(h: Harness) -> None:
    h.config.resync_seconds = 60.0
    h.config.retry_base_seconds = 0.1
    h.start()


def _converged(h: Harness, generation: int) -> bool:
    st = h.cr(NS, "default").get("status") or {}
    return (st.get("configGeneration") == generation and h.running_config()[1] == generation
            and (h.reason("default", "Reconciled") or "").startswith("True/"))


def _config_versions(h: Harness) -> list[int]:
    """Generation of each stored version of the ConfigMap, oldest first."""
    out = []
    for version in h.cluster.history("configmaps", AGENTS, "kpod-agent-config"):
        labels = (version.get("metadata") or {}).get("labels") or {}
        out.append(int(labels["kpod.io/config-generation"]))
    return out


def _one_of_each(h: Harness) -> None:
    assert set(h.object_counts().values()) == {1}, h.object_counts()


def test_500_on_creates_is_retried_until_everything_exists_once(op_harness: Harness) -> None:
    h = op_harness
    faults = [h.cluster.inject(plural, {"PATCH"}, 500, times)  # apply creates
              for plural, times in (("configmaps", 2), ("daemonsets", 3), ("services", 1), ("clusterroles", 1))]
    _start(h)
    h.apply_cr(NS, "default", SPEC)
    wait_for(lambda: h.configmap() and h.daemonset() and _converged(h, 1), what="converged after 500s")
    assert [f.hits for f in faults] == [f.times for f in faults]
    _one_of_each(h)
    assert _config_versions(h) == [1]
    assert h.daemonset()["metadata"]["generation"] == 1


def test_409_on_config_and_status_writes_raises_the_generation_once(op_harness: Harness) -> None:
    h = op_harness
    _start(h)
    h.fleet_ready(SPEC)
    ds_rv = h.daemonset()["metadata"]["resourceVersion"]
    cm_conflicts = h.cluster.inject("configmaps", {"PATCH"}, 409, 2)
    status_conflicts = h.cluster.inject("kpodmetricsprofiles", {"PATCH"}, 409, 2, subresource="status")
    h.apply_cr(NS, "default", {"syscalls": ["read", "write", "close"]})
    wait_for(lambda: _converged(h, 2), what="converged after 409s")
    assert (cm_conflicts.hits, status_conflicts.hits) == (2, 2)
    assert h.node_config().syscalls == ["read", "write", "close"]
    assert _config_versions(h) == [1, 2]
    _one_of_each(h)
    assert h.daemonset()["metadata"]["resourceVersion"] == ds_rv  # a node-config edit never touches it


def test_timed_out_writes_committed_late_are_not_applied_twice(op_harness: Harness) -> None:
    h = op_harness
    _start(h)
    h.fleet_ready(SPEC)
    # Answered after the operator's client gave up, but committed all the same.
    slow_cm = h.cluster.inject("configmaps", {"PATCH"}, None, 1, delay=1.0)
    slow_ds = h.cluster.inject("daemonsets", {"PATCH"}, None, 1, delay=1.0)
    h.apply_cr(NS, "default", {"syscalls": ["futex"], "agent": {"image": "kpod-agent:1.1"}})
    wait_for(lambda: _converged(h, 2) and
             h.daemonset()["spec"]["template"]["spec"]["containers"][0]["image"] == "kpod-agent:1.1",
             what="converged after timeouts")
    assert (slow_cm.hits, slow_ds.hits) == (1, 1)
    time.sleep(1.2)  # the late commits have landed
    assert _config_versions(h) == [1, 2]
    assert h.daemonset()["metadata"]["generation"] == 2
    assert h.running_config()[1] == 2
    _one_of_each(h)


def test_500_on_reads_is_retried(op_harness: Harness) -> None:
    h = op_harness
    _start(h)
    h.fleet_ready(SPEC)
    broken = h.cluster.inject("configmaps", {"GET"}, 500, 3)
    h.apply_cr(NS, "default", {"profile": "minimal"})
    wait_for(lambda: _converged(h, 2) and h.node_config().profile == "minimal", what="converged after GET 500s")
    assert broken.hits == 3
    assert _config_versions(h) == [1, 2]


def test_a_lasting_failure_is_reported_retried_less_and_less_often_and_heals(op_harness: Harness) -> None:
    h = op_harness
    _start(h)
    h.fleet_ready(SPEC)
    good = h.running_config()
    broken = h.cluster.inject("configmaps", {"PATCH"}, 500, 10_000)
    started = time.monotonic()
    h.apply_cr(NS, "default", {"profile": "minimal"})
    wait_for(lambda: h.reason("default", "Reconciled") == "False/ApplyFailed", what="ApplyFailed")
    assert "ConfigMap/kpod-agent-config" in h.condition(NS, "default", "Reconciled")["message"]
    # 5 s: each gap is a reconcile (up to ~1 s on a loaded machine) plus the
    # delay, so the doubling shows once the delays outgrow the reconcile.
    time.sleep(5.0)
    attempts = h.cluster.writes("configmaps", since=started)
    # Delays of 0.1 s doubling: about 6 attempts in 5 s (a fixed 0.1 s retry would make ~50).
    assert 3 <= len(attempts) <= 10, len(attempts)
    gaps = [b.time - a.time for a, b in itertools.pairwise(attempts)]
    assert gaps[-1] > 2 * gaps[0], gaps
    # Nothing half-written meanwhile: the agents keep the last good config.
    assert h.running_config() == good
    assert h.cr(NS, "default")["status"]["configGeneration"] == 1
    h.cluster.heal(broken)
    wait_for(lambda: _converged(h, 2), timeout=15, what="healed")
    assert h.node_config().profile == "minimal"
    assert _config_versions(h) == [1, 2]


def test_409_on_kopf_own_patches_of_the_cr_still_converges(op_harness: Harness) -> None:
    """kopf records its progress in annotations of the CR; those patches failing
    must not lose the change."""
    h = op_harness
    _start(h)
    h.fleet_ready(SPEC)
    conflicts = h.cluster.inject("kpodmetricsprofiles", {"PATCH"}, 409, 3)
    h.apply_cr(NS, "default", {"profile": "minimal"})
    wait_for(lambda: _converged(h, 2) and h.node_config().profile == "minimal", what="converged")
    assert conflicts.hits >= 1, "kopf did not patch the CR"
    assert _config_versions(h) == [1, 2]


def test_a_status_that_cannot_be_written_does_not_block_the_fleet(op_harness: Harness) -> None:
    """A second fleet CR whose status the API refuses (a webhook, a quota, a
    broken conversion) is only a warning: the active fleet still converges."""
    h = op_harness
    _start(h)
    h.fleet_ready(SPEC)
    h.cluster.inject("kpodmetricsprofiles", {"PATCH"}, 500, 10_000, subresource="status", name="second")
    h.apply_cr(NS, "second", {"profile": "minimal"})
    h.apply_cr(NS, "default", {"syscalls": ["futex"]})
    wait_for(lambda: _converged(h, 2) and h.node_config().syscalls == ["futex"], what="fleet converged")


def test_a_failed_override_change_is_retried_without_waiting_for_the_resync(op_harness: Harness) -> None:
    """Overrides are handled from watch events, which kopf does not retry: a
    failed write must still be retried soon, with the same growing delay."""
    h = op_harness
    _start(h)
    h.fleet_ready(SPEC)
    broken = h.cluster.inject("configmaps", {"PATCH"}, 500, 3)
    h.apply_cr("team-a", "metrics", {"profile": "comprehensive"})
    wait_for(lambda: _converged(h, 2) and "team-a" in h.node_config().namespaceOverrides,
             what="override applied after 500s")
    assert broken.hits == 3
    assert _config_versions(h) == [1, 2]
    wait_for(lambda: h.reason("metrics", "Reconciled", "team-a") == "True/Merged", what="override status")


def test_a_failed_status_refresh_from_agent_events_is_retried(op_harness: Harness) -> None:
    h = op_harness
    _start(h)
    h.fleet_ready(SPEC)
    broken = h.cluster.inject("kpodmetricsprofiles", {"PATCH"}, 500, 2, subresource="status")
    h.write_ds_status(desiredNumberScheduled=2, updatedNumberScheduled=2, numberAvailable=2, numberReady=2)
    wait_for(lambda: h.reason("default", "Available") == "True/AllAvailable", what="status refreshed after 500s")
    assert broken.hits == 2
