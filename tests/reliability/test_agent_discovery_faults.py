"""Discovery faults against a real agent on this kernel: the kubelet down,
slow, answering garbage or 500; the API watch expiring (410 Gone) or the API
failing. The agent keeps serving its last view (series of existing pods stay,
counts stay exact), reports the errors (kpod_discovery_errors_total,
/config discovery.lastError), and catches up when the source returns."""
from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kpod_agent.agent import Agent
from kpod_agent.discovery import KUBELET_TIMEOUT, Discovery
from tests.support.emulator import EmulatedCluster
from tests.support.fake_kubelet import FakeKubelet
from tests.support.kernel_node import FakePod, KernelNode
from tests.support.scraper import Scraper
from tests.support.waiting import wait_for

pytestmark = pytest.mark.kernel

COUNT = "kpod_syscall_count_total"


def kubelet_down(kubelet: FakeKubelet) -> int:
    """Stop listening (connections refused); the port, to come back on."""
    port = kubelet._server.server_address[1]
    kubelet._server.shutdown()
    kubelet._server.server_close()
    return port


def kubelet_up(kubelet: FakeKubelet, port: int) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), kubelet._handler_class())
    server.daemon_threads = True
    kubelet._server = server
    kubelet._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    kubelet._thread.start()


# ---- kubelet mode -----------------------------------------------------------


@pytest.fixture(scope="module")
def kubelet_agent(node: KernelNode) -> Iterator[tuple[Scraper, dict[str, FakePod]]]:
    pods = {"a": node.add_pod("disc-a", "disc"), "b": node.add_pod("disc-b", "disc")}
    agent = Agent(node_name="node-1")
    # cpu reads each pod's cpu.stat too: cgroups removed during a fault are read
    assert agent.apply(node.config(collectors={"syscall": {}, "cpu": {}}, syscalls=["getppid"]))
    scraper = Scraper(agent)
    scraper.sync()
    yield scraper, pods
    agent.shutdown()
    for pod in pods.values():
        if pod.uid in node.pods:
            node.remove_pod(pod)


def _fault(kind: str, kubelet: FakeKubelet) -> Callable[[], None]:
    """Start fault `kind`; returns what ends it."""
    if kind == "down":
        port = kubelet_down(kubelet)
        return lambda: kubelet_up(kubelet, port)
    if kind == "500":
        kubelet.fail_with(500)
    elif kind == "slow":
        kubelet.slow(KUBELET_TIMEOUT[1] + 1.5)  # past the agent's read timeout
    elif kind == "garbage":
        kubelet.garbage()
    elif kind == "not-a-podlist":
        kubelet.garbage(b'{"kind": "Status", "status": "Failure", "items": {"oops": 1}}')
    else:
        raise ValueError(kind)
    return kubelet.healthy


@pytest.mark.parametrize("kind,expect", [
    ("down", "ConnectionError"), ("500", "HTTP 500"), ("slow", "Timeout"),
    ("garbage", "invalid JSON"), ("not-a-podlist", "not a PodList"),
])
def test_kubelet_fault_keeps_last_view_and_recovers(
        kubelet_agent: tuple[Scraper, dict[str, FakePod]], node: KernelNode, kind: str, expect: str) -> None:
    scraper, pods = kubelet_agent
    agent = scraper.agent
    a, b = pods["a"], pods["b"]
    doomed = node.add_pod(f"disc-doomed-{kind}", "disc")  # deleted while the source is broken
    scraper.sync()
    doomed.workload("getppid", 5)
    scraper.sync()
    assert scraper.pod_value(COUNT, doomed, syscall="getppid") == 5
    doomed_ids = {doomed.cgroup_id("app"), doomed.cgroup_id("")}
    start = {p: scraper.pod_value(COUNT, pods[p], syscall="getppid") for p in pods}
    errors = scraper.value("kpod_discovery_errors_total")
    assert scraper.value("kpod_discovery_pods") == len(agent.index.pods) >= 2

    heal = _fault(kind, node.kubelet)
    newcomer = None
    try:
        scraper.sync()  # a refresh that fails
        assert scraper.value("kpod_discovery_errors_total") > errors
        status = agent.status().model_dump(mode="json")["discovery"]
        assert expect in (status["lastError"] or ""), status
        assert status["synced"] is True and agent.ready(), "one failed list must not make the agent unready"
        # the last view stays: same pods, and the kernel keeps counting them exactly
        newcomer = node.add_pod(f"disc-new-{kind}", "disc")  # created while the source is broken
        node.remove_pod(doomed)  # its cgroups are gone; the last view still lists it
        read_errors = scraper.value("kpod_cgroup_read_errors_total", collector="cpu")
        agent.collect_due(force=True)
        assert scraper.value("kpod_cgroup_read_errors_total", collector="cpu") > read_errors
        assert scraper.value("kpod_collector_attached", collector="cpu") == 1
        a.workload("getppid", 101)
        b.workload("getppid", 7)
        newcomer.workload("getppid", 13)
        agent.collect_due(force=True)
        assert scraper.pod_value(COUNT, a, syscall="getppid") - start["a"] == 101
        assert scraper.pod_value(COUNT, b, syscall="getppid") - start["b"] == 7
        assert scraper.pod_value(COUNT, newcomer, syscall="getppid") == 0  # not known yet, not counted
        assert newcomer.uid not in agent.index.pods
    finally:
        heal()
    try:
        # recovery on the agent's own timer (backoff is capped), no help from the test
        wait_for(lambda: newcomer.uid in agent.view.index.pods, "discovery to recover", timeout=15)
        newcomer.workload("getppid", 17)
        agent.collect_due(force=True)
        assert scraper.pod_value(COUNT, newcomer, syscall="getppid") == 17
        assert scraper.pod_value(COUNT, a, syscall="getppid") - start["a"] == 101
        assert agent.discovery is not None and agent.discovery._failures == 0
    finally:
        node.remove_pod(newcomer)
    # and deletions seen after recovery take their series away
    scraper.sync()
    assert not [s for s in scraper.series(COUNT) if s["pod"] in (newcomer.name, doomed.name)]
    assert not [s for s in scraper.series("kpod_cpu_context_switches_total") if s["pod"] == doomed.name]
    collector = agent.states["syscall"].collector
    assert collector is not None
    assert not doomed_ids & {k.value for k in collector.bpf["allowed_cgroups"].keys()}


def test_kubelet_down_at_startup_then_up(node: KernelNode) -> None:
    """No first view at all: not ready, nothing counted, errors reported;
    ready and counting once the kubelet answers."""
    pod = node.add_pod("disc-late", "disc")
    port = kubelet_down(node.kubelet)
    agent = Agent(node_name="node-1")
    try:
        assert agent.apply(node.config(collectors={"syscall": {}}, syscalls=["getppid"]))
        assert not agent.ready()
        assert agent.status().discovery.errors >= 1
        pod.workload("getppid", 19)
        agent.collect_due(force=True)
        assert Scraper(agent).pod_value(COUNT, pod, syscall="getppid") == 0
        kubelet_up(node.kubelet, port)
        wait_for(agent.ready, "ready after the kubelet came up", timeout=15)
        pod.workload("getppid", 23)
        agent.collect_due(force=True)
        assert Scraper(agent).pod_value(COUNT, pod, syscall="getppid") == 23
    finally:
        if node.kubelet._server.server_address[1] != port or not node.kubelet._thread.is_alive():
            kubelet_up(node.kubelet, port)
        agent.shutdown()
        node.remove_pod(pod)


# ---- informer mode ------------------------------------------------------------


@pytest.fixture(scope="module")
def api() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as server:
        yield server


@pytest.fixture(scope="module")
def informer_agent(node: KernelNode, api: EmulatedCluster) -> Iterator[tuple[Scraper, dict[str, FakePod]]]:
    pods = {"a": node.add_pod("inf-a", "informer"), "b": node.add_pod("inf-b", "informer")}
    for pod in pods.values():
        api.apply(pod.doc)

    def factory(config: Any, resolver: Any, on_change: Any) -> Discovery:
        # short server-side watches: resuming from a resourceVersion is exercised too
        return Discovery(config.discovery, "node-1", resolver, on_change=on_change, api_client=api.api_client(),
                         max_backoff=0.5, watch_timeout_seconds=2)

    agent = Agent(node_name="node-1", discovery_factory=factory)
    config = node.config(collectors={"syscall": {}}, syscalls=["getppid"],
                         discovery={"mode": "informer", "interval": "200ms", "kubepodsRoots": [node.root]})
    assert agent.apply(config)
    wait_for(lambda: set(agent.index.pods) >= {p.uid for p in pods.values()}, "informer's first view")
    scraper = Scraper(agent)
    agent.collect_due(force=True)
    yield scraper, pods
    agent.shutdown()
    for pod in pods.values():
        node.remove_pod(pod)


def _informer_case(scraper: Scraper, pods: dict[str, FakePod], node: KernelNode, api: EmulatedCluster,
                   break_it: Callable[[], None], heal: Callable[[], None], name: str, expect: str) -> None:
    agent = scraper.agent
    a = pods["a"]
    start = scraper.pod_value(COUNT, a, syscall="getppid")
    errors = scraper.value("kpod_discovery_errors_total")
    known = set(agent.index.pods)
    break_it()
    # Breaking may first cost a routine error (an expired watch): wait for the one meant.
    wait_for(lambda: scraper.value("kpod_discovery_errors_total") > errors
             and expect in (agent.status().discovery.lastError or ""), "the error to be counted and named")
    newcomer = node.add_pod(name, "informer")
    try:
        a.workload("getppid", 31)
        agent.collect_due(force=True)
        assert set(agent.index.pods) >= known
        assert scraper.pod_value(COUNT, a, syscall="getppid") - start == 31
        heal()
        api.apply(newcomer.doc)
        # The published view, not agent.index: the index is set before the
        # filter maps and the view, and a pod is counted only after those.
        wait_for(lambda: newcomer.uid in agent.view.index.pods, "the informer to catch up", timeout=15)
        newcomer.workload("getppid", 37)
        agent.collect_due(force=True)
        assert scraper.pod_value(COUNT, newcomer, syscall="getppid") == 37
        assert scraper.pod_value(COUNT, a, syscall="getppid") - start == 31
        api.delete("pods", newcomer.namespace, newcomer.name)
        wait_for(lambda: newcomer.uid not in agent.view.index.pods, "the deletion to be seen")
        assert not [s for s in scraper.series(COUNT) if s["pod"] == newcomer.name]
    finally:
        node.remove_pod(newcomer)


def test_watch_expired_410_relists(informer_agent: tuple[Scraper, dict[str, FakePod]], node: KernelNode,
                                   api: EmulatedCluster) -> None:
    scraper, pods = informer_agent
    _informer_case(scraper, pods, node, api, api.expire_watches, lambda: None, "inf-after-410", "expired")


def test_api_failing_keeps_last_view(informer_agent: tuple[Scraper, dict[str, FakePod]], node: KernelNode,
                                     api: EmulatedCluster) -> None:
    scraper, pods = informer_agent

    def break_it() -> None:
        api.fail_with(500)
        api.expire_watches()  # drops the open watch; the re-list then meets the 500s

    _informer_case(scraper, pods, node, api, break_it, lambda: api.fail_with(None), "inf-after-500", "500")
