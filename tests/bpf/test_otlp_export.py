"""OTLP push against this kernel: what a local receiver decodes (with the
OpenTelemetry protobuf definitions) is what /metrics shows for the same
view, down to the exact count of a pod's syscalls; `otlp` reloads restart
the pusher only; the real command sends the headers of its headers file and
never shows them; a receiver down is counted and changes nothing else."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpod_agent import otlp
from kpod_agent.agent import Agent
from kpod_agent.exporter import KpodCollector
from kpod_agent.view import CollectionView
from tests.support.kernel_node import FakePod, KernelNode
from tests.support.otlp_receiver import OtlpReceiver, as_samples, resource_attributes, scrape_samples
from tests.support.running_agent import running_agent
from tests.support.scraper import Scraper
from tests.support.waiting import wait_for

KEY = "otlp-K3y-never-shown"
CALLS = 137


@dataclasses.dataclass
class Source:
    view: CollectionView


@pytest.fixture(scope="module")
def pods(node: KernelNode) -> dict[str, FakePod]:
    return {"a": node.add_pod("otlp-a", "ns-otlp"), "b": node.add_pod("otlp-b", "ns-otlp")}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def _pod_labels(pod: FakePod) -> dict[str, str]:
    return {"namespace": pod.namespace, "pod": pod.name, "container": "app", "node": "node-1"}


def _calls(samples: dict, pod: FakePod, **extra: str) -> float:  # type: ignore[type-arg]
    labels = frozenset({**_pod_labels(pod), "syscall": "getppid", **extra}.items())
    return samples.get(("kpod_syscall_count_total", labels), 0.0)


def test_pushed_series_equal_a_scrape_of_the_same_view(node: KernelNode, pods: dict[str, FakePod],
                                                       receiver: OtlpReceiver) -> None:
    agent = Agent(node_name="node-1")
    try:
        config = node.config(collectors={"syscall": {"latency": True}}, syscalls=["getppid"], clusterName="c1",
                             otlp={"enabled": True, "endpoint": receiver.url})
        assert agent.apply(config)
        Scraper(agent).sync()
        pods["a"].workload("getppid", CALLS)
        Scraper(agent).sync()
        view = agent.view
        pusher = otlp.OtlpPusher(config.otlp, lambda: view, agent.count_export)
        assert pusher.push_once()
        pushed = as_samples(receiver.last().request)
        scraped = scrape_samples(KpodCollector(Source(view)).render_text().decode())
        assert pushed == scraped
        assert _calls(pushed, pods["a"], cluster="c1") == CALLS and _calls(pushed, pods["b"], cluster="c1") == 0
        hist = {k: v for k, v in pushed.items() if k[0] == "kpod_syscall_latency_seconds_count"
                and ("pod", "otlp-a") in k[1]}
        assert list(hist.values()) == [CALLS]
        assert resource_attributes(receiver.last().request)["cluster"] == "c1"
    finally:
        agent.shutdown()


def test_otlp_reload_restarts_only_the_pusher(node: KernelNode, pods: dict[str, FakePod],
                                              receiver: OtlpReceiver) -> None:
    agent = Agent(node_name="node-1")
    agent.pusher_factory = lambda conf: otlp.OtlpPusher(conf, lambda: agent.view, agent.count_export)
    scraper = Scraper(agent)
    try:
        base = {"collectors": {"syscall": {}}, "syscalls": ["getppid"]}
        assert agent.apply(node.config(generation=1, **base))
        scraper.sync()
        collector = agent.states["syscall"].collector
        pods["a"].workload("getppid", CALLS)
        scraper.sync()
        time.sleep(0.5)
        assert receiver.received == [] and agent.pusher is None

        assert agent.apply(node.config(generation=2, otlp={"enabled": True, "endpoint": receiver.url,
                                                           "interval": "200ms"}, **base))
        wait_for(lambda: receiver.received, "a push", timeout=10)
        assert _calls(as_samples(receiver.last().request), pods["a"]) == CALLS
        with OtlpReceiver() as second:
            assert agent.apply(node.config(generation=3, otlp={"enabled": True, "endpoint": second.url,
                                                               "interval": "200ms"}, **base))
            wait_for(lambda: second.received, "a push to the new endpoint", timeout=10)
            seen = len(receiver.received)
            time.sleep(0.6)
            assert len(receiver.received) == seen  # the old pusher is gone
            assert agent.states["syscall"].collector is collector  # never re-attached
            pods["a"].workload("getppid", 3)
            scraper.sync()
            wait_for(lambda: _calls(as_samples(second.last().request), pods["a"]) == CALLS + 3,
                     "counters kept across the reload", timeout=10)

            assert agent.apply(node.config(generation=4, **base))
            assert agent.pusher is None
            seen = len(second.received)
            time.sleep(0.6)
            assert len(second.received) == seen
        assert agent.view.otlp_exports["success"] >= 2
    finally:
        agent.shutdown()


def test_command_sends_headers_never_shows_them_and_survives_a_dead_receiver(
        node: KernelNode, pods: dict[str, FakePod], receiver: OtlpReceiver,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("otlp")
    headers = tmp / "headers"
    headers.write_text(f"x-api-key={KEY}\n")
    with running_agent(node, tmp, 1, collectors={"syscall": {}}, syscalls=["getppid"],
                       otlp={"enabled": True, "endpoint": receiver.url, "headersFile": str(headers),
                             "interval": "200ms"}) as agent:
        agent.wait(lambda: agent.metric("kpod_syscall_count_total", pod="otlp-a") == 0
                   and agent.metric("kpod_discovery_pods") >= 2, "pods known")
        pods["a"].workload("getppid", CALLS)
        agent.wait(lambda: receiver.received and _calls(as_samples(receiver.last().request), pods["a"]) == CALLS,
                   "the calls pushed", timeout=15)
        got = receiver.last()
        assert got.headers["x-api-key"] == KEY and got.path == "/v1/metrics"
        assert _calls(as_samples(got.request), pods["b"]) == 0
        assert agent.metric("kpod_syscall_count_total", pod="otlp-a", syscall="getppid") == CALLS

        receiver.close()  # the receiver goes away: counted, /metrics unaffected
        before = agent.metric("kpod_otlp_exports_total", result="error")
        agent.wait(lambda: agent.metric("kpod_otlp_exports_total", result="error") >= before + 2,
                   "failed pushes counted", timeout=30)
        assert agent.metric("kpod_otlp_exports_total", result="success") >= 1
        pods["a"].workload("getppid", 5)
        agent.wait(lambda: agent.metric("kpod_syscall_count_total", pod="otlp-a", syscall="getppid") == CALLS + 5,
                   "collection goes on")
        status, body = agent.get("/config")
        assert status == 200
        assert f"OTLP push to {receiver.url}/v1/metrics failed" in agent.log.read_text()
        shown = body + agent.get("/metrics")[1] + agent.log.read_text() + Path(agent.path).read_text()
        assert KEY not in shown
