"""Events of cgroups the agent cannot attribute are counted, not lost: a
cgroup that ran and was removed before the agent read it (mode none, where
every cgroup is counted) adds exactly its events to
kpod_unknown_cgroup_events_total, and no pod's series changes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpod_agent import cgroups
from kpod_agent.agent import Agent
from tests.support.kernel_node import FakePod, KernelNode
from tests.support.scraper import Scraper

N = 1009  # a prime: nothing else on the node makes exactly this many calls
M = 101
UNKNOWN = "kpod_unknown_cgroup_events_total"
# getpgid: a syscall no other test or service here calls in bulk, so other
# cgroups coming and going on the node add nothing to the counts.
CALLS = "import os\nfor _ in range({n}): os.getpgid(0)"


@pytest.fixture(scope="module")
def pod(node: KernelNode) -> FakePod:
    return node.add_pod("known", "team-a")


@pytest.fixture(scope="module")
def scraper(node: KernelNode, pod: FakePod) -> Iterator[Scraper]:
    agent = Agent(node_name="node-1")
    config = node.config(collectors={"syscall": {"enabled": True}}, syscalls=["getpgid"],
                         discovery={"mode": "none", "interval": "1h"})
    assert agent.apply(config), agent.reloads.last_error
    assert agent.states["syscall"].collector is not None, agent.states["syscall"].error
    scraper = Scraper(agent)
    scraper.sync()
    yield scraper
    agent.shutdown()


def _calls_in(directory: Path, n: int) -> None:
    """A process in the cgroup2 directory, from before its exec, making n getpgid calls."""
    procs = directory / "cgroup.procs"

    def join() -> None:
        procs.write_text("0")

    subprocess.run([sys.executable, "-S", "-c", CALLS.format(n=n)], preexec_fn=join, check=True)


def _host_series(scraper: Scraper, relpath: str) -> float:
    return scraper.value("kpod_syscall_count_total", namespace="host", pod=relpath, container="",
                         syscall="getpgid")


def _rmdir(directory: Path) -> None:
    for _ in range(100):
        try:
            os.rmdir(directory)
            return
        except OSError:  # the exited task takes a moment to leave
            time.sleep(0.05)
    os.rmdir(directory)


def test_events_of_a_cgroup_gone_before_the_read_are_counted(
        scraper: Scraper, node: KernelNode, pod: FakePod) -> None:
    known = pod.relpaths["app"]
    before_known = _host_series(scraper, known)
    before_unknown = scraper.value(UNKNOWN, collector="syscall", metric="kpod_syscall_count_total")
    transient = node.layout.unified_dir(f"{node.root}/gone-{uuid.uuid4().hex[:8]}")
    transient.mkdir()
    try:
        cgid = cgroups.cgroup_id(transient)
        _calls_in(transient, N)
    finally:
        _rmdir(transient)
    pod.run([sys.executable, "-S", "-c", CALLS.format(n=M)]).check_returncode()
    scraper.agent.collect_due(force=True)  # no new walk: the pod index is the old one
    after_unknown = scraper.value(UNKNOWN, collector="syscall", metric="kpod_syscall_count_total")
    assert after_unknown - before_unknown == N
    assert _host_series(scraper, known) - before_known == M
    assert not any(s.get("pod", "").endswith(transient.name) for s in scraper.series("kpod_syscall_count_total"))
    # counted once: its map entries went with it
    stats = scraper.agent.states["syscall"].collector.bpf["syscall_stats"]  # type: ignore[union-attr]
    assert not [k for k in stats.keys() if k.cgid == cgid]
    scraper.agent.collect_due(force=True)
    assert scraper.value(UNKNOWN, collector="syscall", metric="kpod_syscall_count_total") == after_unknown


def test_a_cgroup_made_after_the_index_is_resolved_when_read(scraper: Scraper, node: KernelNode) -> None:
    before_unknown = scraper.value(UNKNOWN, collector="syscall", metric="kpod_syscall_count_total")
    relpath = f"{node.root}/late-{uuid.uuid4().hex[:8]}"
    late = node.layout.unified_dir(relpath)
    late.mkdir()
    try:
        _calls_in(late, N)
        scraper.agent.collect_due(force=True)
        assert _host_series(scraper, relpath) == N
        assert scraper.value(UNKNOWN, collector="syscall", metric="kpod_syscall_count_total") == before_unknown
    finally:
        _rmdir(late)
