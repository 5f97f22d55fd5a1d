"""Limits: more cgroups than the BPF maps hold (capacity 8, or a small maxCgroups).

Full maps refuse updates: the refusals are counted
(kpod_bpf_map_update_errors_total), nothing crashes, and the cgroups that
did fit keep exact counts. (The churn of 2,000 pods is test_agent_churn.py.)
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from kpod_agent.agent import Agent
from kpod_agent.contract import MapFull

from tests.bpf.conftest import Scraper
from tests.support.kernel_node import FakePod, KernelNode

pytestmark = pytest.mark.kernel

MAX_CGROUPS = 8  # allowed_cgroups holds 8 cgroups, syscall_stats 32 (cgroup, syscall) pairs
# What a workload's exec and run touch, so a few pods overflow syscall_stats.
MANY_SYSCALLS = ["getppid", "close", "read", "write", "openat", "mmap", "munmap", "mprotect", "brk",
                 "newfstatat", "pread64", "execve", "arch_prctl", "set_tid_address",
                 "set_robust_list", "rseq", "prlimit64", "getrandom", "exit_group", "access", "nanosleep",
                 "clock_nanosleep"]


# ---- more cgroups than map capacity ------------------------------------------------


@pytest.fixture(scope="module")
def crowded(node: KernelNode) -> Iterator[tuple[Scraper, list[FakePod]]]:
    pods = [node.add_pod(f"crowd-{i}", "crowd") for i in range(10)]  # 20 cgroups for 8 slots
    agent = Agent(node_name="node-1", max_cgroups=MAX_CGROUPS)
    assert agent.apply(node.config(collectors={"syscall": {}}, syscalls=["getppid"]))
    scraper = Scraper(agent)
    scraper.sync()
    yield scraper, pods
    agent.shutdown()
    for pod in pods:
        node.remove_pod(pod)


def _tracked(scraper: Scraper, pods: list[FakePod]) -> list[FakePod]:
    """Pods whose container cgroup made it into allowed_cgroups (read from the kernel map)."""
    collector = scraper.agent.states["syscall"].collector
    assert collector is not None
    in_map = {k.value for k in collector.bpf["allowed_cgroups"].keys()}
    return [p for p in pods if p.cgroup_id() in in_map]


def test_full_filter_map_counts_refusals_and_keeps_the_rest_exact(crowded: tuple[Scraper, list[FakePod]]) -> None:
    scraper, pods = crowded
    agent = scraper.agent
    assert scraper.value("kpod_collector_attached", collector="syscall") == 1
    refused = scraper.value("kpod_bpf_map_update_errors_total", map="allowed_cgroups", collector="syscall")
    assert refused >= 20 - MAX_CGROUPS, refused
    tracked = _tracked(scraper, pods)
    untracked = [p for p in pods if p not in tracked]
    assert tracked and untracked, (len(tracked), len(untracked))
    for i, pod in enumerate(pods):
        pod.workload("getppid", 100 + i)
    scraper.sync()
    for i, pod in enumerate(pods):
        expected = 100 + i if pod in tracked else 0  # untracked: nothing, never someone else's figure
        assert scraper.pod_value("kpod_syscall_count_total", pod, syscall="getppid") == expected, pod.name
    assert agent.status().collectors["syscall"].attached is True


def test_full_filter_map_is_reported_once_per_cgroup_and_pod(
        crowded: tuple[Scraper, list[FakePod]], caplog: pytest.LogCaptureFixture) -> None:
    scraper, pods = crowded
    agent = scraper.agent
    collector = agent.states["syscall"].collector
    assert collector is not None
    in_map = {k.value for k in collector.bpf["allowed_cgroups"].keys()}
    refused_cgroups = [c for p in pods for c in (p.cgroup_id(""), p.cgroup_id()) if c not in in_map]
    not_counted = {f"{p.namespace}/{p.name}" for p in pods
                   if p.cgroup_id("") not in in_map or p.cgroup_id() not in in_map}
    assert len(refused_cgroups) == 20 - MAX_CGROUPS
    with caplog.at_level("WARNING", logger="kpod_agent.agent"):
        for _ in range(3):  # every discovery refresh retries them: still counted once
            agent.on_index(agent.discovery.refresh())
    errors = scraper.value("kpod_bpf_map_update_errors_total", map="allowed_cgroups", collector="syscall")
    assert errors == len(refused_cgroups)
    assert scraper.value("kpod_bpf_map_entries", map="allowed_cgroups", collector="syscall") == MAX_CGROUPS
    assert scraper.value("kpod_bpf_map_capacity", map="allowed_cgroups", collector="syscall") == MAX_CGROUPS
    assert scraper.value("kpod_pods_not_counted", collector="syscall") == len(not_counted)
    assert agent.status().collectors["syscall"].mapFull == MapFull(map="allowed_cgroups",
                                                                   podsNotCounted=len(not_counted))
    # named when first refused (at apply), not again on each retry
    assert not [r for r in caplog.records if "is not counted" in r.getMessage()]
    assert agent.uncounted["syscall"] == not_counted


def test_map_capacity_follows_max_cgroups_on_reload(node: KernelNode, caplog: pytest.LogCaptureFixture) -> None:
    pods = [node.add_pod(f"cap-{i}", "cap") for i in range(40)]  # 80 cgroups
    agent = Agent(node_name="node-1")
    scraper = Scraper(agent)
    try:
        with caplog.at_level("WARNING", logger="kpod_agent.agent"):
            assert agent.apply(node.config(collectors={"syscall": {}}, syscalls=["getppid"], maxCgroups=64))
            scraper.sync()
        assert scraper.value("kpod_bpf_map_capacity", map="allowed_cgroups", collector="syscall") == 64
        assert scraper.value("kpod_bpf_map_capacity", map="syscall_stats", collector="syscall") == 64 * 4
        uncounted = agent.uncounted["syscall"]
        assert uncounted and scraper.value("kpod_pods_not_counted", collector="syscall") == len(uncounted)
        # (the module's other agent, capacity 8, names these new pods too)
        named = [r.getMessage() for r in caplog.records if "capacity 64): pod" in r.getMessage()]
        assert sorted(m.split("pod ")[1].split(" is")[0] for m in named) == sorted(uncounted)  # each once
        left_out = next(p for p in pods if f"{p.namespace}/{p.name}" in uncounted)
        assert agent.apply(node.config(collectors={"syscall": {}}, syscalls=["getppid"], maxCgroups=128))
        scraper.sync()
        assert scraper.value("kpod_bpf_map_capacity", map="allowed_cgroups", collector="syscall") == 128
        assert scraper.value("kpod_pods_not_counted", collector="syscall") == 0
        assert agent.status().collectors["syscall"].mapFull is None
        left_out.workload("getppid", 77)
        scraper.sync()
        assert scraper.pod_value("kpod_syscall_count_total", left_out, syscall="getppid") == 77
    finally:
        agent.shutdown()
        for pod in pods:
            node.remove_pod(pod)


def test_full_stats_map_counts_refusals_in_bpf_and_keeps_existing_keys_exact(
        crowded: tuple[Scraper, list[FakePod]]) -> None:
    scraper, pods = crowded
    node = pods[0].node
    assert scraper.agent.apply(node.config(collectors={"syscall": {}}, syscalls=MANY_SYSCALLS))
    tracked = _tracked(scraper, pods)
    first, others = tracked[0], tracked[1:]
    first.workload("getppid", 1)  # its keys go in while there is room
    scraper.sync()
    before = scraper.pod_value("kpod_syscall_count_total", first, syscall="getppid")
    assert scraper.value("kpod_bpf_map_update_errors_total", map="syscall_stats", collector="syscall") == 0
    # every tracked pod execs a workload: dozens of (cgroup, syscall) pairs for 32 slots
    for _ in range(2):
        for pod in others:
            pod.workload("sleep", 2, 10)
            pod.workload("badclose", 3)
    scraper.sync()
    collector = scraper.agent.states["syscall"].collector
    assert collector is not None
    entries, capacity = collector.map_stats["syscall_stats"]
    assert entries == capacity == MAX_CGROUPS * 4
    assert scraper.value("kpod_bpf_map_update_errors_total", map="syscall_stats", collector="syscall") > 0
    assert scraper.value("kpod_bpf_map_entries", map="syscall_stats", collector="syscall") == capacity
    # the first pod's keys were there before the map filled: its counts stay exact
    first.workload("getppid", 499)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", first, syscall="getppid") - before == 499
