"""Hot reload against this kernel: collectors attach and detach, filters
change in the maps, and everything else keeps running with its counters."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from kpod_agent.agent import Agent
from tests.bpf.conftest import Scraper
from tests.support.kernel_node import FakePod, KernelNode


@pytest.fixture(scope="module")
def pods(node: KernelNode) -> dict[str, FakePod]:
    return {
        "a": node.add_pod("reload-a", "ns-a", labels={"app": "web"}),
        "b": node.add_pod("reload-b", "ns-b", labels={"app": "web"}),
    }


@pytest.fixture
def scraper(node: KernelNode, pods: dict[str, FakePod]) -> Iterator[Scraper]:
    agent = Agent(node_name="node-1")
    scraper = Scraper(agent)
    yield scraper
    agent.shutdown()


def _apply(scraper: Scraper, config) -> None:  # type: ignore[no-untyped-def]
    assert scraper.agent.apply(config)
    scraper.sync()


def test_removed_syscall_stops_counting_at_once(scraper: Scraper, node: KernelNode, pods: dict[str, FakePod]) -> None:
    a = pods["a"]
    _apply(scraper, node.config(collectors={"syscall": {}}, syscalls=["getppid", "close"]))
    collector = scraper.agent.states["syscall"].collector
    a.workload("getppid", 101)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid") == 101
    _apply(scraper, node.config(collectors={"syscall": {}}, syscalls=["close"]))
    assert scraper.agent.states["syscall"].collector is collector, "allowlist change must not re-attach"
    a.workload("getppid", 50)
    a.workload("badclose", 7)
    scraper.sync()
    # getppid no longer counted; close keeps counting in the same program
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid") == 101
    # the loader closes files at start-up: the failed closes are the exact figure
    assert scraper.pod_value("kpod_syscall_errors_total", a, syscall="close", errno="EBADF") == 7
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="close") >= 7
    assert "getppid" not in collector.attached_syscalls  # type: ignore[union-attr]


def test_allowlist_churn_counts_each_call_once(scraper: Scraper, node: KernelNode, pods: dict[str, FakePod]) -> None:
    """Dropped tracepoints close in the background; adding their syscalls back
    before that takes the queued ones back instead of attaching a second
    program (which would count every call twice)."""
    from kpod_agent.collectors.syscall import CLOSER
    from kpod_agent.config import syscall_numbers

    a = pods["a"]
    every = ["getppid", *sorted(syscall_numbers())[:60]]
    _apply(scraper, node.config(collectors={"syscall": {"latency": True}}, syscalls=every))
    collector = scraper.agent.states["syscall"].collector
    a.workload("getppid", 101)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid") == 101
    assert scraper.pod_value("kpod_syscall_latency_seconds_count", a, syscall="getppid") == 101
    _apply(scraper, node.config(collectors={"syscall": {}}, syscalls=["close"]))
    assert CLOSER.pending() > 60, "the dropped tracepoints are closed in the background"
    a.workload("getppid", 50)  # not counted: its bit is gone, its program may still run
    _apply(scraper, node.config(collectors={"syscall": {"latency": True}}, syscalls=every))
    assert scraper.agent.states["syscall"].collector is collector
    a.workload("getppid", 7)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid") == 101 + 7
    assert scraper.pod_value("kpod_syscall_latency_seconds_count", a, syscall="getppid") == 101 + 7
    assert CLOSER.wait_idle(60)


def test_namespace_moving_to_another_allowlist_keeps_counts_exact(
        scraper: Scraper, node: KernelNode, pods: dict[str, FakePod]) -> None:
    """A (cgroup, syscall) entry remembers the policy it was counted under:
    when an override gives the namespace another allowlist, the entries start
    afresh (their counts carried), so a syscall the new list lacks stops."""
    a = pods["a"]
    fleet = {"collectors": {"syscall": {}}, "syscalls": ["getppid", "close"]}
    _apply(scraper, node.config(**fleet))
    a.workload("getppid", 61)
    a.workload("badclose", 3)
    scraper.sync()
    _apply(scraper, node.config(**fleet, namespaceOverrides={"ns-a": {"syscalls": ["close"]}}))
    a.workload("getppid", 67)  # no longer allowed for ns-a
    a.workload("badclose", 5)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid") == 61
    assert scraper.pod_value("kpod_syscall_errors_total", a, syscall="close", errno="EBADF") == 3 + 5
    _apply(scraper, node.config(**fleet))  # and back to the fleet's list
    a.workload("getppid", 71)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid") == 61 + 71


def test_excluded_namespace_stops_counting_and_its_series_go(
        scraper: Scraper, node: KernelNode, pods: dict[str, FakePod]) -> None:
    a, b = pods["a"], pods["b"]
    base = {"collectors": {"syscall": {}, "cpu": {}}, "syscalls": ["getppid"]}
    _apply(scraper, node.config(**base))
    a.workload("getppid", 11)
    b.workload("getppid", 13)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", b, syscall="getppid") == 13
    cpu = scraper.agent.states["cpu"].collector
    _apply(scraper, node.config(**base, namespaces={"include": [], "exclude": ["ns-b"]}))
    assert scraper.agent.states["cpu"].collector is cpu, "a filter change must not re-attach"
    assert not [s for s in scraper.series("kpod_syscall_count_total") if s["namespace"] == "ns-b"]
    assert not [s for s in scraper.series("kpod_cpu_context_switches_total") if s["namespace"] == "ns-b"]
    b.workload("getppid", 17)
    a.workload("getppid", 19)
    scraper.sync()
    assert not [s for s in scraper.series("kpod_syscall_count_total") if s["namespace"] == "ns-b"]
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid") == 11 + 19
    # and back: counting resumes from zero for the re-included pods
    _apply(scraper, node.config(**base))
    b.workload("getppid", 23)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", b, syscall="getppid") == 23


def test_pod_selector_filters_in_kernel(scraper: Scraper, node: KernelNode, pods: dict[str, FakePod]) -> None:
    a = pods["a"]
    _apply(scraper, node.config(collectors={"syscall": {}}, syscalls=["getppid"],
                                podSelector={"matchLabels": {"app": "db"}}))
    a.workload("getppid", 29)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid") == 0
    allowed = scraper.agent.states["syscall"].collector.bpf["allowed_cgroups"]  # type: ignore[union-attr]
    assert a.cgroup_id() not in {k.value for k in allowed.keys()}


def test_namespace_override_comprehensive_over_minimal_fleet(
        scraper: Scraper, node: KernelNode, pods: dict[str, FakePod]) -> None:
    a, b = pods["a"], pods["b"]
    _apply(scraper, node.config(profile="minimal", syscalls=["getppid"],
                                namespaceOverrides={"ns-a": {"profile": "comprehensive"}}))
    assert scraper.agent.states["syscall"].collector is not None
    a.workload("getppid", 31)
    b.workload("getppid", 37)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid") == 31
    assert not [s for s in scraper.series("kpod_syscall_count_total") if s["namespace"] == "ns-b"]
    # cpu is in both profiles: both namespaces count it
    assert scraper.pod_value("kpod_cpu_context_switches_total", b) > 0


def test_override_allowlist_applies_to_its_namespace_only(
        scraper: Scraper, node: KernelNode, pods: dict[str, FakePod]) -> None:
    a, b = pods["a"], pods["b"]
    _apply(scraper, node.config(collectors={"syscall": {}}, syscalls=["close"],
                                namespaceOverrides={"ns-a": {"syscalls": ["getppid"]}}))
    a.workload("getppid", 41)
    b.workload("getppid", 43)
    a.workload("badclose", 3)
    b.workload("badclose", 5)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid") == 41
    assert scraper.pod_value("kpod_syscall_count_total", b, syscall="getppid") == 0
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="close") == 0
    assert scraper.pod_value("kpod_syscall_errors_total", b, syscall="close", errno="EBADF") == 5


def test_toggle_collectors_keeps_other_counters(scraper: Scraper, node: KernelNode, pods: dict[str, FakePod]) -> None:
    a = pods["a"]
    _apply(scraper, node.config(collectors={"cpu": {}, "syscall": {}}, syscalls=["getppid"]))
    a.workload("sleep", 50, 100)
    scraper.sync()
    switches = scraper.pod_value("kpod_cpu_context_switches_total", a)
    assert switches >= 50
    cpu = scraper.agent.states["cpu"].collector
    _apply(scraper, node.config(collectors={"cpu": {}, "execsnoop": {}}, syscalls=["getppid"]))
    assert "syscall" not in scraper.agent.states
    assert scraper.agent.states["cpu"].collector is cpu
    assert scraper.agent.states["execsnoop"].collector is not None, scraper.agent.states["execsnoop"].error
    assert scraper.value("kpod_collector_attached", collector="execsnoop") == 1
    assert not scraper.series("kpod_syscall_count_total")
    assert scraper.pod_value("kpod_cpu_context_switches_total", a) >= switches


def test_bad_config_keeps_last_good(scraper: Scraper, node: KernelNode, pods: dict[str, FakePod]) -> None:
    agent = scraper.agent
    _apply(scraper, node.config(collectors={"syscall": {}}, syscalls=["getppid"], generation=3))
    for bad in (b"{{{ not yaml", b"collectors: {warp: {}}", b"collectors: {cpu: {interval: soon}}",
                b"syscalls: [getppid, frobnicate]", b"", b"x" * (2 << 20)):
        assert not agent.submit(bad, "test")
    assert agent.config is not None and agent.config.generation == 3
    assert agent.reloads.error == 6
    assert scraper.value("kpod_config_reloads_total", result="error") == 6
    assert "frobnicate" in (agent.status().lastError or "") or agent.status().lastError
    pods["a"].workload("getppid", 47)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", pods["a"], syscall="getppid") == 47


def test_collectors_read_on_their_own_intervals(scraper: Scraper, node: KernelNode, pods: dict[str, FakePod]) -> None:
    agent = scraper.agent
    _apply(scraper, node.config(collectors={"cpu": {"interval": "1m"}, "syscall": {"interval": "500ms"}},
                                syscalls=["getppid"]))
    start = 1_000_000.0  # a clock of our own: collect_due takes `now`
    agent.collect_due(now=start, force=True)
    cpu_snapshot = agent.snapshots["cpu"]
    pods["a"].workload("getppid", 53)
    for step in range(1, 5):  # 4 cycles, 0.6 s apart: syscall due each time, cpu never
        agent.collect_due(now=start + 0.6 * step)
    assert agent.snapshots["cpu"] is cpu_snapshot
    assert scraper.value("kpod_collector_skipped_total", collector="cpu") == 4
    assert scraper.value("kpod_collector_skipped_total", collector="syscall") == 0
    assert scraper.pod_value("kpod_syscall_count_total", pods["a"], syscall="getppid") == 53
    agent.collect_due(now=start + 61)
    assert agent.snapshots["cpu"] is not cpu_snapshot


def test_discovery_errors_survive_a_discovery_restart(scraper: Scraper, node: KernelNode,
                                                      pods: dict[str, FakePod]) -> None:
    _apply(scraper, node.config(collectors={"cpu": {}}))
    node.kubelet.fail_with(500)
    try:
        scraper.agent.discovery.refresh()  # type: ignore[union-attr]
        scraper.agent.discovery.refresh()  # type: ignore[union-attr]
        errors = scraper.value("kpod_discovery_errors_total")
        assert errors >= 2
        # a new discovery interval restarts discovery: the counter must not go down
        assert scraper.agent.apply(node.config(collectors={"cpu": {}}, discovery={"interval": "300ms"}))
        assert scraper.value("kpod_discovery_errors_total") >= errors
    finally:
        node.kubelet.healthy()
