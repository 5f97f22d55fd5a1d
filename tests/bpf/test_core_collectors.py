"""cpu, network, memory and syscall collectors against this kernel: exact
counts in the pod that did the work, nothing in its neighbour."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest

from kpod_agent.agent import Agent
from tests.support.kernel_node import FakePod, KernelNode
from tests.support.scraper import Scraper

N = 1009  # a prime: no other activity makes exactly this many events


@pytest.fixture(scope="module")
def pods(node: KernelNode) -> dict[str, FakePod]:
    return {
        "a": node.add_pod("pod-a", "team-a", labels={"app": "web"}),
        "b": node.add_pod("pod-b", "team-b", labels={"app": "db"}),
    }


@pytest.fixture(scope="module")
def scraper(node: KernelNode, pods: dict[str, FakePod]) -> Iterator[Scraper]:
    agent = Agent(node_name="node-1")
    config = node.config(
        collectors={**{name: {"enabled": True} for name in ("cpu", "network", "memory")},
                    "syscall": {"enabled": True, "latency": True}},
        syscalls=["getppid", "close"],
        includeLabels=["app"],
    )
    assert agent.apply(config)
    failed = {n: s.error for n, s in agent.states.items() if s.collector is None}
    assert not failed, f"collectors failed to attach: {failed}"
    scraper = Scraper(agent)
    scraper.sync()
    assert set(agent.index.pods) == {p.uid for p in pods.values()}
    yield scraper
    agent.shutdown()


def test_getppid_counted_exactly_in_its_pod(scraper: Scraper, pods: dict[str, FakePod]) -> None:
    a, b = pods["a"], pods["b"]
    before_a = scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid")
    before_b = scraper.pod_value("kpod_syscall_count_total", b, syscall="getppid")
    a.workload("getppid", N)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid") - before_a == N
    assert scraper.pod_value("kpod_syscall_count_total", b, syscall="getppid") - before_b == 0
    # every counted call also lands in the latency histogram
    count = scraper.pod_value("kpod_syscall_latency_seconds_count", a, syscall="getppid")
    inf = scraper.pod_value("kpod_syscall_latency_seconds_bucket", a, syscall="getppid", le="+Inf")
    assert count == inf == scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid")
    assert scraper.pod_value("kpod_syscall_latency_seconds_sum", a, syscall="getppid") > 0


def test_failed_close_counted_as_ebadf(scraper: Scraper, pods: dict[str, FakePod]) -> None:
    b = pods["b"]
    before = scraper.pod_value("kpod_syscall_errors_total", b, syscall="close", errno="EBADF")
    b.workload("badclose", N)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_errors_total", b, syscall="close", errno="EBADF") - before == N
    assert scraper.pod_value("kpod_syscall_errors_total", pods["a"], syscall="close", errno="EBADF") == 0


def test_syscall_outside_allowlist_not_counted(scraper: Scraper, pods: dict[str, FakePod]) -> None:
    pods["a"].workload("sleep", 3, 1000)
    scraper.sync()
    names = {s["syscall"] for s in scraper.series("kpod_syscall_count_total")}
    assert names <= {"getppid", "close"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_bytes_exact_on_both_sides(scraper: Scraper, pods: dict[str, FakePod]) -> None:
    a, b = pods["a"], pods["b"]
    total = 1_000_000
    names = ("kpod_net_tcp_bytes_sent_total", "kpod_net_tcp_bytes_received_total", "kpod_net_tcp_connections_total")
    before = {(p, n): scraper.pod_value(n, pods[p]) for p in "ab" for n in names}
    port = _free_port()
    server = b.spawn([str(a.node.workload), "recv", str(port), str(total)], stdout=subprocess.PIPE)
    assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
    a.workload("send", "127.0.0.1", port, total)
    out, _ = server.communicate(timeout=30)
    assert server.returncode == 0, out
    scraper.sync()
    delta = {(p, n): scraper.pod_value(n, pods[p]) - before[(p, n)] for p in "ab" for n in names}
    assert delta[("a", "kpod_net_tcp_bytes_sent_total")] == total
    assert delta[("b", "kpod_net_tcp_bytes_received_total")] == total
    assert delta[("a", "kpod_net_tcp_bytes_received_total")] == 0
    assert delta[("b", "kpod_net_tcp_bytes_sent_total")] == 0
    # one active open in A, one accepted connection in B
    assert delta[("a", "kpod_net_tcp_connections_total")] == 1
    assert delta[("b", "kpod_net_tcp_connections_total")] == 1
    assert scraper.pod_value("kpod_net_tcp_connection_latency_seconds_count", a) >= 1
    assert scraper.pod_value("kpod_net_tcp_rtt_seconds_count", a) >= 1


def test_context_switches_and_runqueue_in_right_pod(scraper: Scraper, pods: dict[str, FakePod]) -> None:
    a, b = pods["a"], pods["b"]
    before_a = scraper.pod_value("kpod_cpu_context_switches_total", a)
    before_b = scraper.pod_value("kpod_cpu_context_switches_total", b)
    runq_before = scraper.pod_value("kpod_cpu_runqueue_latency_seconds_count", a)
    a.workload("sleep", 200, 100)
    scraper.sync()
    # every nanosleep switches the task out once; start and exit add a few
    assert scraper.pod_value("kpod_cpu_context_switches_total", a) - before_a >= 200
    assert scraper.pod_value("kpod_cpu_context_switches_total", b) - before_b == 0
    # each wakeup from a sleep waits in the run queue before running
    assert scraper.pod_value("kpod_cpu_runqueue_latency_seconds_count", a) - runq_before >= 200


def test_major_page_faults_in_right_pod(scraper: Scraper, pods: dict[str, FakePod], tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b = pods["a"], pods["b"]
    data = tmp_path / "pages.bin"
    data.write_bytes(os.urandom(4 << 20))
    os.sync()
    before_a = scraper.pod_value("kpod_mem_major_page_faults_total", a)
    before_b = scraper.pod_value("kpod_mem_major_page_faults_total", b)
    a.workload("fault", data)
    scraper.sync()
    # 1024 pages read through a mapping with readahead off: each is a major fault,
    # unless the filesystem keeps some cached despite FADV_DONTNEED
    assert scraper.pod_value("kpod_mem_major_page_faults_total", a) - before_a >= 1
    assert scraper.pod_value("kpod_mem_major_page_faults_total", b) - before_b == 0


def test_working_set_follows_memory_held_in_its_pod(scraper: Scraper, pods: dict[str, FakePod]) -> None:
    a, b = pods["a"], pods["b"]
    held = 64 << 20
    scraper.sync()
    before_a = scraper.pod_value("kpod_mem_working_set_bytes", a)
    before_b = scraper.pod_value("kpod_mem_working_set_bytes", b)
    rss_before = scraper.pod_value("kpod_mem_rss_bytes", a)
    # a process in pod A allocates 64 MiB and touches every page, then holds it
    holder = a.spawn([str(a.node.workload), "hold", str(held >> 20)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
        scraper.sync()
        assert scraper.pod_value("kpod_mem_working_set_bytes", a) - before_a >= held
        assert scraper.pod_value("kpod_mem_rss_bytes", a) - rss_before >= held
        assert scraper.pod_value("kpod_mem_working_set_bytes", b) - before_b < held // 16
    finally:
        holder.communicate(timeout=30)
    # the memory is freed with the process: the working set drops by as much again
    scraper.sync()
    assert scraper.pod_value("kpod_mem_working_set_bytes", a) < before_a + held // 16


def test_oom_kill_charged_to_victim_pod(scraper: Scraper, node: KernelNode, pods: dict[str, FakePod]) -> None:
    a, b = pods["a"], pods["b"]
    if "memory" not in node.layout.v1 and not (node.layout.unified / "cgroup.controllers").exists():
        pytest.skip("no memory controller")
    memdir = node.layout.controller_dir(b.relpaths["app"], "memory")
    limit_file = memdir / ("memory.limit_in_bytes" if node.layout.hybrid else "memory.max")
    limit_file.write_text(str(32 << 20))
    swap_file = memdir / "memory.memsw.limit_in_bytes"
    before_a = scraper.pod_value("kpod_mem_oom_kills_total", a)
    before_b = scraper.pod_value("kpod_mem_oom_kills_total", b)
    try:
        result = b.workload("hog", 256, check=False)
    finally:
        limit_file.write_text("-1" if node.layout.hybrid else "max")
    assert result.returncode == -9, f"hog was not OOM-killed: {result.returncode} {result.stderr!r} {swap_file}"
    scraper.sync()
    assert scraper.pod_value("kpod_mem_oom_kills_total", b) - before_b == 1
    assert scraper.pod_value("kpod_mem_oom_kills_total", a) - before_a == 0


def test_series_carry_pod_labels(scraper: Scraper, pods: dict[str, FakePod]) -> None:
    pods["a"].workload("getppid", 3)
    scraper.sync()
    series = [s for s in scraper.series("kpod_syscall_count_total") if s["pod"] == "pod-a"]
    assert series and all(
        s["namespace"] == "team-a" and s["container"] == "app" and s["node"] == "node-1" and s["label_app"] == "web"
        for s in series
    )


def test_deleted_pod_series_disappear(scraper: Scraper, node: KernelNode) -> None:
    gone = node.add_pod("short-lived", "team-a")
    scraper.sync()
    gone.workload("getppid", 7)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", gone, syscall="getppid") == 7
    cgid = gone.cgroup_id()
    node.remove_pod(gone)
    scraper.sync()
    assert not [s for s in scraper.series("kpod_syscall_count_total") if s["pod"] == "short-lived"]
    assert not [s for s in scraper.series("kpod_cpu_context_switches_total") if s["pod"] == "short-lived"]
    # and its map entries are gone with it
    stats = scraper.agent.states["syscall"].collector.bpf["syscall_stats"]  # type: ignore[union-attr]
    assert not [k for k in stats.keys() if k.cgid == cgid]


def test_promtool_accepts_scrape(scraper: Scraper, pods: dict[str, FakePod], tmp_path) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import generate_latest

    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus (scripts/setup.sh --test does it)"
    pods["a"].workload("getppid", 5)
    scraper.sync()
    text = generate_latest(scraper.registry)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_failed_probe_degrades_only_its_collector(node: KernelNode, pods: dict[str, FakePod]) -> None:
    from kpod_agent.collectors.cpu import CpuCollector

    class BrokenCpu(CpuCollector):
        source = "cpu.c"

        def bpf_text(self, config):  # type: ignore[no-untyped-def]
            # a tracepoint this kernel does not have
            return super().bpf_text(config) + "\nTRACEPOINT_PROBE(sched, kpod_no_such_event) { return 0; }\n"

    from kpod_agent.collectors import REGISTRY

    agent = Agent(node_name="node-1", collector_classes={**REGISTRY, "cpu": BrokenCpu})
    try:
        assert agent.apply(node.config(collectors={"cpu": {"enabled": True}, "syscall": {"enabled": True}},
                                       syscalls=["getppid"]))
        assert agent.states["cpu"].collector is None and "kpod_no_such_event" in (agent.states["cpu"].error or "")
        scraper = Scraper(agent)
        scraper.sync()
        assert scraper.value("kpod_collector_attached", collector="cpu") == 0
        assert scraper.value("kpod_collector_attached", collector="syscall") == 1
        pods["a"].workload("getppid", N)
        scraper.sync()
        assert scraper.pod_value("kpod_syscall_count_total", pods["a"], syscall="getppid") == N
    finally:
        agent.shutdown()


def _samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    found = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if "le" in labels:
                labels["le"] = repr(float(labels["le"]))
            found.add((sample.name, tuple(sorted(labels.items())), sample.value))
    return found


def test_fast_text_equals_library_exposition(scraper: Scraper, pods: dict[str, FakePod], tmp_path) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import generate_latest

    from kpod_agent.exporter import KpodCollector

    pods["a"].workload("getppid", 13)
    scraper.sync()
    fast = KpodCollector(scraper.agent).render_text().decode()
    library = generate_latest(scraper.registry).decode()
    volatile = ("kpod_collector_duration_seconds", "kpod_collection_cycle_duration_seconds")
    a = {s for s in _samples(fast) if not s[0].startswith(volatile)}
    b = {s for s in _samples(library) if not s[0].startswith(volatile)}
    assert a == b and len(a) > 50
    promtool = shutil.which("promtool")
    assert promtool
    result = subprocess.run([promtool, "check", "metrics"], input=fast.encode(), capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
