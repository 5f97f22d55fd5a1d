"""Shutdown of the real `kpod-agent` command: SIGTERM detaches every probe
(its programs leave the kernel, its tracepoint and kprobe attachments go),
and an agent started again on the same config, after a clean stop or after
SIGKILL, attaches everything and counts exactly from zero."""
from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.kernel_node import FakePod, KernelNode
from tests.support.running_agent import RunningAgent, loaded_prog_ids, prog_ids_of

pytestmark = pytest.mark.kernel

# cachestat attaches kprobes, the others tracepoints (syscall: per-syscall ones).
COLLECTORS = ("cpu", "memory", "syscall", "execsnoop", "cachestat")
LABELS = {"namespace": "stop", "pod": "stop-a", "container": "app", "node": "node-1"}


def perf_attachments(prog_ids: set[int]) -> list[dict]:
    """Tracepoint/kprobe attachments (bpftool perf) of the given programs."""
    out = subprocess.run(["bpftool", "perf", "list", "--json"], capture_output=True, check=True).stdout
    return [a for a in json.loads(out or b"[]") if a.get("prog_id") in prog_ids]


@pytest.fixture(scope="module")
def pod(node: KernelNode) -> FakePod:
    return node.add_pod("stop-a", "stop")


@pytest.fixture
def agent(node: KernelNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    running = RunningAgent(node, tmp_path_factory.mktemp("stop"))
    running.write(4, collectors={name: {"interval": "200ms"} for name in COLLECTORS}, syscalls=["getppid"])
    yield running
    if getattr(running, "proc", None) is not None and running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait()


def _start_and_count(agent: RunningAgent, pod: FakePod, n: int) -> set[int]:
    """Start the agent, check every collector attached and an exact count; its programs."""
    agent.start()
    status = agent.config()
    assert {name: status["collectors"][name]["attached"] for name in COLLECTORS} == dict.fromkeys(COLLECTORS, True), \
        status["collectors"]
    pod.workload("getppid", n)
    agent.wait(lambda: agent.metric("kpod_syscall_count_total", syscall="getppid", **LABELS) >= n, "count")
    assert agent.metric("kpod_syscall_count_total", syscall="getppid", **LABELS) == n
    pod.workload("fork", 11)
    agent.wait(lambda: agent.metric("kpod_proc_forks_total", **LABELS) >= 11, "forks")
    assert agent.metric("kpod_proc_forks_total", **LABELS) == 11
    held = prog_ids_of(agent.proc.pid)
    assert held and held <= loaded_prog_ids()
    assert perf_attachments(held), "no tracepoint or kprobe attachment seen for the agent's programs"
    return held


def test_sigterm_detaches_every_probe_and_a_restart_counts_exactly(agent: RunningAgent, pod: FakePod) -> None:
    first = _start_and_count(agent, pod, 1019)
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=20) == 0
    assert not first & loaded_prog_ids(), "programs left in the kernel after SIGTERM"
    assert not perf_attachments(first)
    log = agent.log.read_text()
    for name in COLLECTORS:
        assert f"collector {name} detached" in log, name
    # same config, same port, same file: a clean start and counts from zero
    agent.log = agent.log.with_name("agent-2.log")
    second = _start_and_count(agent, pod, 1021)
    assert not first & second
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=20) == 0
    assert not second & loaded_prog_ids()


def test_restart_after_sigkill_attaches_cleanly(agent: RunningAgent, pod: FakePod) -> None:
    """A crash skips every cleanup; the kernel drops the probes with the
    process's fds, and nothing left behind stops the next agent."""
    first = _start_and_count(agent, pod, 1031)
    agent.proc.kill()
    agent.proc.wait(timeout=10)
    assert not first & loaded_prog_ids()
    agent.log = agent.log.with_name("agent-after-kill.log")
    _start_and_count(agent, pod, 1033)
    assert "not attached" not in agent.log.read_text()


def _start_until_compiling(agent: RunningAgent) -> None:
    """Start the agent and return while it is loading its programs: one is
    in the kernel and the config is not applied yet (five compiles: ~1 s)."""
    agent.launch()
    agent.wait(lambda: bool(prog_ids_of(agent.proc.pid)), "a first program loaded", 30)
    assert "applied config" not in agent.log.read_text(), "startup finished before the signal could be sent"


def test_sighup_while_starting_rereads_instead_of_killing(agent: RunningAgent, pod: FakePod) -> None:
    _start_until_compiling(agent)
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait(lambda: agent.get("/readyz")[0] == 200, "ready", 30)
    agent.wait(lambda: agent.metric("kpod_config_reloads_total", result="success") == 2, "the SIGHUP re-read")
    assert agent.proc.poll() is None
    pod.workload("getppid", 1049)
    agent.wait(lambda: agent.metric("kpod_syscall_count_total", syscall="getppid", **LABELS) == 1049, "count")


def test_sigterm_while_starting_exits_cleanly(agent: RunningAgent) -> None:
    _start_until_compiling(agent)
    held = prog_ids_of(agent.proc.pid)
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=30) == 0, agent.log.read_text()[-2000:]
    assert not held & loaded_prog_ids()
    assert "shutting down: detaching probes" in agent.log.read_text()


def test_sigterm_while_the_kubelet_hangs(agent: RunningAgent, node: KernelNode, pod: FakePod) -> None:
    """Discovery blocked in a request must not hold up the exit."""
    agent.start()
    held = prog_ids_of(agent.proc.pid)
    requests = node.kubelet.requests
    node.kubelet.slow(60)
    try:
        agent.wait(lambda: node.kubelet.requests > requests, "a request to the hanging kubelet")
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(timeout=10) == 0, agent.log.read_text()[-2000:]
    finally:
        node.kubelet.healthy()
    assert not held & loaded_prog_ids()
