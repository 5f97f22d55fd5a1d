"""The pod-network test support: pods in their own network namespaces talk
over veth pairs, and the network collector charges each side to its pod."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from kpod_agent.agent import Agent
from tests.support.kernel_node import FakePod, KernelNode
from tests.support.pod_network import PodNet, pod_network
from tests.support.scraper import Scraper


@pytest.fixture(scope="module")
def nets(node: KernelNode) -> Iterator[dict[str, PodNet]]:
    with pod_network() as network:
        yield {name: network.attach(node.add_pod(f"net-{name}", "team-net")) for name in "abc"}


@pytest.fixture(scope="module")
def scraper(node: KernelNode, nets: dict[str, PodNet]) -> Iterator[Scraper]:
    agent = Agent(node_name="node-1")
    assert agent.apply(node.config(collectors={"network": {"enabled": True}}))
    assert agent.states["network"].collector is not None, agent.states["network"].error
    scraper = Scraper(agent)
    scraper.sync()
    yield scraper
    agent.shutdown()


def test_pods_have_their_own_addresses(nets: dict[str, PodNet]) -> None:
    assert len({n.ip for n in nets.values()}) == 3
    out = nets["a"].run(["ip", "-o", "-4", "addr", "show", "eth0"]).stdout.decode()
    assert f"{nets['a'].ip}/24" in out


def test_bytes_between_two_pods_charged_to_each(scraper: Scraper, nets: dict[str, PodNet]) -> None:
    a, b = nets["a"], nets["b"]
    total, port = 123_457, 7070
    names = ("kpod_net_tcp_bytes_sent_total", "kpod_net_tcp_bytes_received_total")
    pods: dict[str, FakePod] = {k: v.pod for k, v in nets.items()}
    before = {(p, n): scraper.pod_value(n, pods[p]) for p in pods for n in names}
    workload = str(a.pod.node.workload)
    server = b.spawn([workload, "recv", str(port), str(total)], stdout=subprocess.PIPE)
    assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
    sent = a.run([workload, "send", b.ip, str(port), str(total)])
    assert sent.returncode == 0, sent.stderr
    out, _ = server.communicate(timeout=30)
    assert server.returncode == 0, out
    scraper.sync()
    delta = {(p, n): scraper.pod_value(n, pods[p]) - before[(p, n)] for p in pods for n in names}
    assert delta[("a", "kpod_net_tcp_bytes_sent_total")] == total
    assert delta[("b", "kpod_net_tcp_bytes_received_total")] == total
    assert delta[("c", "kpod_net_tcp_bytes_sent_total")] == delta[("c", "kpod_net_tcp_bytes_received_total")] == 0
