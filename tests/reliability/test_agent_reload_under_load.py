"""Reloads while Prometheus scrapes: the real `kpod-agent` gets config edits
that attach and detach collectors while several clients read /metrics and
/config in a loop. Every answer is a complete, parseable exposition, the
agent never dies, and the counts of a collector kept through every reload
stay exact."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.kernel_node import FakePod, KernelNode
from tests.support.running_agent import RunningAgent, running_agent

pytestmark = pytest.mark.kernel

LABELS = {"namespace": "load", "pod": "load-a", "container": "app", "node": "node-1", "syscall": "getppid"}
RELOADS = 8


@pytest.fixture(scope="module")
def pod(node: KernelNode) -> FakePod:
    return node.add_pod("load-a", "load")


@pytest.fixture(scope="module")
def cli(node: KernelNode, pod: FakePod, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    with running_agent(node, tmp_path_factory.mktemp("load"), 1,
                       collectors={"syscall": {"interval": "100ms"}}, syscalls=["getppid"]) as agent:
        yield agent


def test_scrapes_during_reloads(cli: RunningAgent, pod: FakePod) -> None:
    stop = threading.Event()
    failures: list[str] = []
    answers = [0]

    def scrape_loop(path: str) -> None:
        while not stop.is_set():
            status, body = cli.get(path)
            if status != 200:
                failures.append(f"{path}: HTTP {status}")
                continue
            try:
                if path == "/metrics":
                    families = list(text_string_to_metric_families(body))
                    if not any(f.name == "kpod_agent_config_generation" for f in families):
                        failures.append("/metrics without the self metrics: cut short?")
                else:

                    json.loads(body)
            except Exception as exc:  # noqa: BLE001 (any parse failure is the finding)
                failures.append(f"{path}: {exc}")
            answers[0] += 1

    threads = [threading.Thread(target=scrape_loop, args=(p,), daemon=True)
               for p in ("/metrics", "/metrics", "/metrics", "/config")]
    for t in threads:
        t.start()
    expected = 0
    try:
        for generation in range(2, 2 + RELOADS):
            extra = {"execsnoop": {"interval": "100ms"}, "cpu": {"interval": "100ms"}} if generation % 2 else {}
            cli.write(generation, collectors={"syscall": {"interval": "100ms"}, **extra}, syscalls=["getppid"])
            pod.workload("getppid", 101)
            expected += 101
            cli.wait(lambda: cli.config()["generation"] == generation, f"generation {generation}", 15)
    finally:
        cli.wait(lambda: cli.metric("kpod_syscall_count_total", **LABELS) >= expected, "the last counts")
        stop.set()
        for t in threads:
            t.join(10)
    assert not failures, failures[:5]
    assert answers[0] > RELOADS, "the scrapers hardly ran"
    assert cli.metric("kpod_syscall_count_total", **LABELS) == expected
    assert cli.metric("kpod_config_reloads_total", result="success") == 1 + RELOADS
    assert cli.metric("kpod_config_reloads_total", result="error") == 0
    assert cli.proc.poll() is None
