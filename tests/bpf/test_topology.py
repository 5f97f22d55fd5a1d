"""Service topology from the kernel: fake pods in their own network namespaces
exchange known TCP traffic, and /topology shows exactly those edges."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kpod_agent import view
from kpod_agent.agent import Agent
from kpod_agent.discovery import Discovery
from kpod_agent.server import AgentHTTPServer
from kpod_agent.topology import end_id
from tests.support.emulator import EmulatedCluster
from tests.support.kernel_node import KernelNode
from tests.support.pod_network import PodNet, pod_network
from tests.support.scraper import Scraper
from tests.support.waiting import wait_for

PEERS = str(Path(__file__).resolve().parents[1] / "support" / "tcp_peers.py")
NAMESPACE = "team-topo"


@pytest.fixture(scope="module")
def nets(node: KernelNode) -> Iterator[dict[str, PodNet]]:
    with pod_network() as network:
        yield {name: network.attach(node.add_pod(f"topo-{name}", NAMESPACE)) for name in "abcd"}


@pytest.fixture(scope="module")
def agent(node: KernelNode, nets: dict[str, PodNet]) -> Iterator[tuple[Agent, str]]:
    agent = Agent(node_name="node-1")
    assert agent.apply(node.config(collectors={"network": {"enabled": True}}))
    assert agent.states["network"].collector is not None, agent.states["network"].error
    scraper = Scraper(agent)
    scraper.sync()
    server = AgentHTTPServer(("127.0.0.1", 0), agent, scraper.registry)
    server.start()
    host, port = server.server_address[:2]
    yield agent, f"http://{host}:{port}"
    server.shutdown()
    server.server_close()
    agent.shutdown()


def exchange(client: PodNet, server: PodNet, port: int, connections: int, send: int, reply: int) -> None:
    peer = server.spawn([sys.executable, PEERS, "server", str(port), str(connections), str(reply)],
                        stdout=subprocess.PIPE)
    assert peer.stdout is not None and peer.stdout.readline().strip() == b"ready"
    done = client.run([sys.executable, PEERS, "client", server.ip, str(port), str(connections), str(send)])
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == connections * reply
    peer.communicate(timeout=30)
    assert peer.returncode == 0


def topology(agent: Agent, url: str) -> dict[str, Any]:
    Scraper(agent).sync()
    with urllib.request.urlopen(f"{url}/topology", timeout=10) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.load(response)


def pod(name: str) -> dict[str, str]:
    return {"namespace": NAMESPACE, "pod": f"topo-{name}"}


def test_each_pair_is_one_edge_with_exact_connections_and_bytes(
        agent: tuple[Agent, str], nets: dict[str, PodNet]) -> None:
    port = 6379
    exchange(nets["a"], nets["b"], port, connections=7, send=10_007, reply=3_001)
    exchange(nets["c"], nets["b"], port, connections=3, send=501, reply=70_001)
    doc = topology(*agent)
    ours = [e for e in doc["edges"] if e["port"] == port]
    assert [(e["source"], e["destination"]) for e in ours] == [(pod("a"), pod("b")), (pod("c"), pod("b"))]
    ab, cb = ours
    # Both ends run on this node: the client's and the server's sockets both
    # counted, and the edge shows each connection once.
    assert ab["observedBy"] == ["client", "server"]
    assert (ab["connections"], ab["bytesSent"], ab["bytesReceived"]) == (7, 7 * 10_007, 7 * 3_001)
    assert ab["bytes"] == 7 * 10_007 + 7 * 3_001
    client, server = ab["sides"]["client"], ab["sides"]["server"]
    assert (client["connections"], client["bytesSent"], client["bytesReceived"]) == (7, 7 * 10_007, 7 * 3_001)
    assert (server["connections"], server["bytesSent"], server["bytesReceived"]) == (7, 7 * 3_001, 7 * 10_007)
    assert (cb["connections"], cb["bytesSent"], cb["bytesReceived"]) == (3, 3 * 501, 3 * 70_001)
    assert cb["sides"]["server"]["connections"] == 3
    assert ab["protocol"] == cb["protocol"] == "redis"
    assert ab["requests"] == 0  # no l7 reading: requests are not guessed
    assert ab["latencyAvgSeconds"] is not None and 0 < ab["latencyAvgSeconds"] < 1
    assert ab["latencyP99Seconds"] >= ab["latencyAvgSeconds"] / 2
    assert ab["drops"] == 0
    # The idle neighbour is in no edge, and nothing else touched these pods.
    named = [e for e in doc["edges"] if NAMESPACE in (e["source"].get("namespace"), e["destination"].get("namespace"))]
    assert len(named) == 2, [(e["source"], e["destination"], e["port"], e["sides"].keys(), e["drops"]) for e in named]
    assert doc["addresses"][nets["d"].ip] == pod("d")


def test_the_command_draws_the_live_agent(agent: tuple[Agent, str]) -> None:
    running, url = agent
    Scraper(running).sync()
    script = Path(sys.executable).with_name("kpod-agent")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "kpod_agent.main"]
    done = subprocess.run([*base, "topology", "--url", url, "--format", "dot"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert '"team-topo/topo-a" -> "team-topo/topo-b" [label="redis:6379 7 conn' in done.stdout
    assert '"team-topo/topo-c" -> "team-topo/topo-b" [label="redis:6379 3 conn' in done.stdout


def test_edges_accumulate_across_readings(agent: tuple[Agent, str], nets: dict[str, PodNet]) -> None:
    port = 5432
    exchange(nets["d"], nets["a"], port, connections=2, send=100, reply=200)
    first = [e for e in topology(*agent)["edges"] if e["port"] == port]
    exchange(nets["d"], nets["a"], port, connections=5, send=100, reply=200)
    second = [e for e in topology(*agent)["edges"] if e["port"] == port]
    assert [(e["source"], e["destination"], e["connections"]) for e in first] == [(pod("d"), pod("a"), 2)]
    assert [(e["connections"], e["bytesSent"], e["bytesReceived"]) for e in second] == [(7, 700, 1400)]


def test_edge_series_count_each_side_once(agent: tuple[Agent, str], nets: dict[str, PodNet]) -> None:
    port = 27017
    exchange(nets["b"], nets["c"], port, connections=4, send=1_000, reply=2_000)
    scraper = Scraper(agent[0])
    scraper.sync()
    labels = {"source": "team-topo/topo-b", "destination": "team-topo/topo-c", "port": str(port),
              "protocol": "mongodb", "node": "node-1"}
    for side in ("client", "server"):
        assert scraper.value("kpod_topology_edge_bytes_total", side=side, **labels) == 4 * 3_000
        assert scraper.value("kpod_topology_edge_connections_total", side=side, **labels) == 4
    assert scraper.value("kpod_topology_edges", node="node-1") >= 8  # 4 pairs seen, from both ends


def test_a_lower_cap_evicts_in_place_and_counts_evictions(
        node: KernelNode, agent: tuple[Agent, str], nets: dict[str, PodNet]) -> None:
    running, url = agent
    scraper = Scraper(running)
    scraper.sync()
    kept = scraper.value("kpod_topology_edges", node="node-1")
    evicted = scraper.value("kpod_topology_edges_evicted_total", node="node-1")
    assert kept >= 8
    collector = running.states["network"].collector
    assert running.apply(node.config(collectors={"network": {"enabled": True}}, topology={"maxEdges": 2}))
    assert running.states["network"].collector is collector  # changed in place, counters kept
    exchange(nets["a"], nets["d"], 8080, connections=1, send=10, reply=10)
    doc = topology(running, url)
    assert [(e["source"], e["destination"]) for e in doc["edges"]] == [(pod("a"), pod("d"))]
    assert doc["edges"][0]["observedBy"] == ["client", "server"]
    assert scraper.value("kpod_topology_edges", node="node-1") == 2
    assert scraper.value("kpod_topology_edges_evicted_total", node="node-1") == evicted + kept
    # The evicted entries are gone from the kernel map too.
    scraper.sync()
    assert scraper.value("kpod_bpf_map_entries", map="tcp_edges", collector="network") == 2


@pytest.fixture(scope="module")
def informer(node: KernelNode) -> Iterator[tuple[Agent, dict[str, PodNet], EmulatedCluster]]:
    """An agent in informer mode against the emulated API server, with two
    pods on their own network and a Service whose ClusterIP is on the server pod."""
    with EmulatedCluster() as api, pod_network() as network:
        nets = {name: network.attach(node.add_pod(f"svc-{name}", "team-svc")) for name in ("client", "server")}
        for net in nets.values():
            api.apply(net.pod.doc)

        def factory(config: Any, resolver: Any, on_change: Any) -> Discovery:
            return Discovery(config.discovery, "node-1", resolver, on_change=on_change, api_client=api.api_client(),
                             max_backoff=0.5)

        agent = Agent(node_name="node-1", discovery_factory=factory)
        config = node.config(collectors={"network": {"enabled": True}},
                             discovery={"mode": "informer", "interval": "200ms", "kubepodsRoots": [node.root]})
        assert agent.apply(config)
        wait_for(lambda: {n.pod.uid for n in nets.values()} <= set(agent.index.pods), "informer's first view")
        try:
            yield agent, nets, api
        finally:
            agent.shutdown()
            for net in nets.values():
                node.remove_pod(net.pod)


def test_a_cluster_ip_names_its_service(informer: tuple[Agent, dict[str, PodNet], EmulatedCluster]) -> None:
    agent, nets, api = informer
    client, server = nets["client"], nets["server"]
    # The ClusterIP answers on the server pod itself (kube-proxy's rewrite is
    # not there): the client's socket still sees the ClusterIP as its peer.
    cluster_ip = server.ip.rsplit(".", 1)[0] + ".250"
    subprocess.run(["ip", "-n", server.netns, "addr", "add", f"{cluster_ip}/32", "dev", "eth0"], check=True)
    api.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cache", "namespace": "team-svc"},
               "spec": {"clusterIP": cluster_ip, "ports": [{"port": 6380}]}})
    assert agent.discovery is not None
    wait_for(lambda: agent.discovery.services.get(cluster_ip) == ("team-svc", "cache"), "the Service's ClusterIP")
    port = 6380
    peer = server.spawn([sys.executable, PEERS, "server", str(port), "2", "300"], stdout=subprocess.PIPE)
    assert peer.stdout is not None and peer.stdout.readline().strip() == b"ready"
    done = client.run([sys.executable, PEERS, "client", cluster_ip, str(port), "2", "100"])
    assert done.returncode == 0, done.stderr
    peer.communicate(timeout=30)
    Scraper(agent).sync()
    edges = {(end_id(e["source"]), end_id(e["destination"])): e
             for e in view.topology_document(agent.view)["edges"] if e["port"] == port}
    # The client's socket names the Service; the server's socket names the client pod.
    assert set(edges) == {("team-svc/svc-client", "team-svc/svc/cache"), ("team-svc/svc-client", "team-svc/svc-server")}
    via_service = edges[("team-svc/svc-client", "team-svc/svc/cache")]
    assert via_service["destination"] == {"namespace": "team-svc", "service": "cache"}
    assert (via_service["observedBy"], via_service["connections"], via_service["bytesSent"],
            via_service["bytesReceived"]) == (["client"], 2, 200, 600)
    served = edges[("team-svc/svc-client", "team-svc/svc-server")]
    assert (served["observedBy"], served["connections"], served["bytesSent"]) == (["server"], 2, 200)
