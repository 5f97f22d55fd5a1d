"""A collector attached by a reload shows its first events within one
interval (+1 s) in the real agent's /metrics, every time.

The default interval is long (15 s) and the attached collector's own one is
1 s, as on a real node: a collection cycle that runs while the reload is
attaching must not schedule the new collector on the old config's interval.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.kernel_node import FakePod, KernelNode
from tests.support.running_agent import RunningAgent, running_agent

ATTACHES = 20
INTERVAL = 1.0
BASE = {"collectors": {"cpu": {}}, "syscalls": ["getppid"], "defaultInterval": "15s"}


@pytest.fixture(scope="module")
def pod(node: KernelNode) -> Iterator[FakePod]:
    pod = node.add_pod("first-a", "first")
    yield pod
    node.remove_pod(pod)


@pytest.fixture(scope="module")
def agent(node: KernelNode, pod: FakePod, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    with running_agent(node, tmp_path_factory.mktemp("first"), 1, **BASE) as running:
        yield running


def _apply(agent: RunningAgent, generation: int, **fields: object) -> None:
    agent.write(generation, **fields)
    agent.wait(lambda: agent.config()["generation"] == generation, f"generation {generation}")


def test_first_events_after_hot_attach_within_one_interval(agent: RunningAgent, pod: FakePod) -> None:
    who = {"namespace": pod.namespace, "pod": pod.name, "container": "app", "node": "node-1"}
    generation = 1
    late = []
    for i in range(ATTACHES):
        name = ("execsnoop", "syscall")[i % 2]
        generation += 1
        _apply(agent, generation, **BASE)  # off
        generation += 1
        _apply(agent, generation, **{**BASE, "collectors": {"cpu": {}, name: {"interval": "1s"}}})  # on again
        assert agent.config()["collectors"][name]["attached"] is True
        n = 5 + i
        if name == "execsnoop":
            pod.workload("exec", n)
            metric, labels, expected = "kpod_proc_execs_total", who, n + 1  # + the workload's own exec
        else:
            pod.workload("getppid", n)
            metric, labels, expected = "kpod_syscall_count_total", {**who, "syscall": "getppid"}, n
        done = time.monotonic()
        agent.wait(lambda: agent.metric(metric, **labels) == expected, f"{metric} == {expected}", 20)
        took = time.monotonic() - done
        if took > INTERVAL + 1.0:
            late.append((i, name, round(took, 2)))
    assert not late, f"first events later than one interval + 1 s: {late}"
