"""BPF faults: a collector whose tracepoint does not exist on this kernel,
and one whose program the verifier rejects. Only those collectors are down
(kpod_collector_attached 0, error in /config and the log); the others count
exactly, and the failed loads leave no program behind."""
from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpod_agent.agent import Agent
from kpod_agent.collectors import REGISTRY
from kpod_agent.collectors.cpu import CpuCollector
from kpod_agent.collectors.memory import MemoryCollector
from kpod_agent.config import AgentConfig
from tests.support.kernel_node import FakePod, KernelNode
from tests.support.running_agent import prog_ids_of
from tests.support.scraper import Scraper

pytestmark = pytest.mark.kernel

N = 1013


class MissingTracepointCpu(CpuCollector):
    """cpu.c plus a probe on an event no kernel has."""

    def bpf_text(self, config: AgentConfig) -> str:
        return super().bpf_text(config) + """
TRACEPOINT_PROBE(kpod_nonexistent, no_such_event)
{
    return 0;
}
"""


class VerifierRejectedMemory(MemoryCollector):
    """memory.c plus a probe that reads far past the end of a map value."""

    def bpf_text(self, config: AgentConfig) -> str:
        return super().bpf_text(config) + """
TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
    int zero = 0;
    u32 *all = count_all.lookup(&zero);
    if (all)
        return all[4096];
    return 0;
}
"""


def _classes() -> dict[str, type]:
    return {**REGISTRY, "cpu": MissingTracepointCpu, "memory": VerifierRejectedMemory}


def _config(node: KernelNode, generation: int, syscalls: tuple[str, ...] = ("getppid",)) -> AgentConfig:
    return node.config(generation=generation,
                       collectors={"cpu": {}, "memory": {}, "syscall": {}, "execsnoop": {}},
                       syscalls=list(syscalls))


@pytest.fixture(scope="module")
def pods(node: KernelNode) -> dict[str, FakePod]:
    return {"a": node.add_pod("faulty-a", "bpf-faults"), "b": node.add_pod("faulty-b", "bpf-faults")}


@pytest.fixture(scope="module")
def broken(node: KernelNode, pods: dict[str, FakePod]) -> Iterator[tuple[Scraper, set[int], list[str]]]:
    """An agent with two broken collectors; the programs this process held
    before it, and the log lines of the apply."""
    gc.collect()
    held_before = prog_ids_of(os.getpid())
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep(level=logging.ERROR)
    logging.getLogger("kpod_agent").addHandler(handler)
    agent = Agent(node_name="node-1", collector_classes=_classes())
    try:
        assert agent.apply(_config(node, 1)), agent.reloads.last_error
    finally:
        logging.getLogger("kpod_agent").removeHandler(handler)
    scraper = Scraper(agent)
    scraper.sync()
    yield scraper, held_before, records
    agent.shutdown()


def test_only_the_broken_collectors_are_down(broken: tuple[Scraper, set[int], list[str]]) -> None:
    scraper, _, records = broken
    agent = scraper.agent
    assert {
        n: scraper.value("kpod_collector_attached", collector=n) for n in ("cpu", "memory", "syscall", "execsnoop")
    } == {"cpu": 0, "memory": 0, "syscall": 1, "execsnoop": 1}
    status = agent.status().model_dump(mode="json")["collectors"]  # as /config shows it
    assert status["cpu"]["attached"] is False and status["memory"]["attached"] is False
    assert status["syscall"]["attached"] is True and status["execsnoop"]["attached"] is True
    # /config says which program and why; the log says it too
    cpu_error, memory_error = status["cpu"]["error"], status["memory"]["error"]
    assert "cpu (cpu.c)" in cpu_error and "no_such_event" in cpu_error, cpu_error
    assert "memory (memory.c)" in memory_error and "Failed to load" in memory_error, memory_error
    assert any("collector cpu not attached" in r for r in records), records
    assert any("collector memory not attached" in r for r in records), records
    assert scraper.value("kpod_collector_errors_total", collector="cpu") == 1
    assert scraper.value("kpod_collector_errors_total", collector="memory") == 1
    assert scraper.value("kpod_collector_errors_total", collector="syscall") == 0
    # none of their series are exposed, not even empty families with stale values
    assert not scraper.series("kpod_cpu_context_switches_total")
    assert not scraper.series("kpod_mem_major_page_faults_total")


def test_the_others_count_exactly(broken: tuple[Scraper, set[int], list[str]], pods: dict[str, FakePod]) -> None:
    scraper, _, _ = broken
    a, b = pods["a"], pods["b"]
    before = {p: scraper.pod_value("kpod_syscall_count_total", pods[p], syscall="getppid") for p in pods}
    forks = {p: scraper.pod_value("kpod_proc_forks_total", pods[p]) for p in pods}
    a.workload("getppid", N)
    b.workload("fork", 37)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid") - before["a"] == N
    assert scraper.pod_value("kpod_syscall_count_total", b, syscall="getppid") - before["b"] == 0
    assert scraper.pod_value("kpod_proc_forks_total", b) - forks["b"] == 37
    assert scraper.pod_value("kpod_proc_forks_total", a) - forks["a"] == 0


def test_failed_loads_leave_no_program_behind(broken: tuple[Scraper, set[int], list[str]]) -> None:
    scraper, held_before, _ = broken
    gc.collect()
    held = prog_ids_of(os.getpid()) - held_before
    working = set()
    for name in ("syscall", "execsnoop"):
        collector = scraper.agent.states[name].collector
        assert collector is not None
        working |= {fd_prog for fd_prog in _prog_ids_of_bpf(collector.bpf)}
    assert held == working, f"programs held by nobody's collector: {sorted(held - working)}"


def _prog_ids_of_bpf(bpf) -> set[int]:  # type: ignore[no-untyped-def]
    """Program ids behind a BPF object's loaded functions (fdinfo of their fds)."""
    ids = set()
    for fn in bpf.funcs.values():
        text = Path(f"/proc/self/fdinfo/{fn.fd}").read_text()
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


def test_a_new_config_retries_the_broken_and_keeps_the_rest(
    broken: tuple[Scraper, set[int], list[str]], node: KernelNode, pods: dict[str, FakePod]
) -> None:
    scraper, _, _ = broken
    agent = scraper.agent
    syscall = agent.states["syscall"].collector
    count = scraper.pod_value("kpod_syscall_count_total", pods["a"], syscall="getppid")
    assert agent.apply(_config(node, 2, ("getppid", "close")))
    assert agent.status().generation == 2
    assert agent.states["syscall"].collector is syscall, "a healthy collector was re-attached"
    assert scraper.value("kpod_collector_errors_total", collector="cpu") == 2  # retried, failed again
    pods["a"].workload("getppid", 7)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", pods["a"], syscall="getppid") == count + 7


def test_a_collector_whose_reads_fail_keeps_its_last_values(node: KernelNode, pods: dict[str, FakePod]) -> None:
    """Reads that raise (a map read refused, a file gone) are counted per
    cycle; the collector's last good values stay exposed, the others go on,
    and fresh values come back with the first good read."""
    from kpod_agent.collectors.execsnoop import ExecsnoopCollector

    class Flaky(ExecsnoopCollector):
        failing = False

        def collect(self, targets):  # type: ignore[no-untyped-def]
            if Flaky.failing:
                raise OSError("map read refused (injected)")
            return super().collect(targets)

    agent = Agent(node_name="node-1", collector_classes={**REGISTRY, "execsnoop": Flaky})
    try:
        assert agent.apply(node.config(collectors={"execsnoop": {}, "syscall": {}}, syscalls=["getppid"]))
        scraper = Scraper(agent)
        scraper.sync()
        a = pods["a"]
        a.workload("fork", 13)
        scraper.sync()
        forks = scraper.pod_value("kpod_proc_forks_total", a)
        calls = scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid")
        Flaky.failing = True
        a.workload("fork", 17)
        a.workload("getppid", 19)
        for _ in range(3):
            agent.collect_due(force=True)
        assert scraper.value("kpod_collector_errors_total", collector="execsnoop") == 3
        assert scraper.value("kpod_collector_attached", collector="execsnoop") == 1
        assert scraper.pod_value("kpod_proc_forks_total", a) == forks  # last good read
        assert scraper.pod_value("kpod_syscall_count_total", a, syscall="getppid") == calls + 19
        Flaky.failing = False
        agent.collect_due(force=True)
        assert scraper.pod_value("kpod_proc_forks_total", a) == forks + 17
    finally:
        Flaky.failing = False
        agent.shutdown()
