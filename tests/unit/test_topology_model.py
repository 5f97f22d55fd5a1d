"""The topology model: bounded edge store, address resolution, merging of
several nodes' views (no connection counted twice) and the drawings."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from kpod_agent import config, pods, topology
from kpod_agent.pods import PodIndex, PodInfo
from kpod_agent.topology import EdgeCounts, EdgeKey, EdgeStore


def key(n: int, role: topology.Role = "client") -> EdgeKey:
    return EdgeKey(cgroup_id=n, local="10.0.0.1", remote="10.0.0.2", port=80, role=role)


def counts(connections: int, sent: int = 0, received: int = 0, retransmits: int = 0,
           rtt_us: tuple[int, ...] = ()) -> EdgeCounts:
    slots = [0] * topology.RTT_SLOTS
    for value in rtt_us:
        slots[max(0, (value - 1).bit_length())] += 1
    return EdgeCounts(connections, sent, received, retransmits, tuple(slots), sum(rtt_us))


# ---- store ---------------------------------------------------------------------


def test_store_evicts_the_least_recently_changed_and_counts_each_eviction() -> None:
    store = EdgeStore(max_edges=3)
    assert store.update({key(1): counts(1), key(2): counts(1), key(3): counts(1)}) == []
    # 1 changes, 2 and 3 do not: 2 is the least recently changed when 4 arrives.
    evicted = store.update({key(1): counts(2), key(2): counts(1), key(3): counts(1), key(4): counts(1)})
    assert evicted == [key(2)]
    assert store.evicted_total == 1
    assert [k.cgroup_id for k, _ in store.items()] == [3, 1, 4]
    assert store.resize(1) == [key(3), key(1)]
    assert store.evicted_total == 3 and len(store) == 1


def test_store_mirrors_the_kernel_map_and_forgets_cgroups() -> None:
    store = EdgeStore(max_edges=10)
    store.update({key(1): counts(1), key(2): counts(1)})
    store.update({key(2): counts(5)})  # 1 was deleted in the kernel (its cgroup forgotten)
    assert store.items() == [(key(2), counts(5))]
    store.forget({2})
    assert len(store) == 0 and store.evicted_total == 0


@pytest.mark.parametrize("text", ["10.1.2.3", "fd00::7", "::1"])
def test_addresses_round_trip_through_the_kernel_form(text: str) -> None:
    raw = topology.ip_bytes(text)
    assert len(raw) == 16
    assert topology.ip_text(raw) == text


# ---- resolution -------------------------------------------------------------------


def pod_info(name: str, ips: tuple[str, ...], host_network: bool = False, namespace: str = "shop") -> PodInfo:
    return PodInfo(uid=name, namespace=namespace, name=name, labels={}, qos_class=None, containers=(),
                   node_name="node-1", ips=ips, host_network=host_network)


def test_pod_ips_come_from_the_pod_status() -> None:
    doc = {"metadata": {"uid": "u", "name": "web", "namespace": "shop"},
           "spec": {"nodeName": "node-1", "hostNetwork": True},
           "status": {"podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.9"}, {"ip": "fd00::9"}, {"ip": "junk"}]}}
    info = pods.pod_from_api(doc)
    assert info is not None and info.ips == ("10.0.0.9", "fd00::9") and info.host_network
    doc["status"] = {"podIP": "10.0.0.8"}
    doc["spec"] = {"nodeName": "node-1"}
    info = pods.pod_from_api(doc)
    assert info is not None and info.ips == ("10.0.0.8",) and not info.host_network
    doc["status"] = {"podIP": 7}
    info = pods.pod_from_api(doc)
    assert info is not None and info.ips == ()


def test_address_book_names_pods_services_and_host_network_pods_as_their_node() -> None:
    index = PodIndex(pods={"a": pod_info("a", ("10.0.0.2",)), "h": pod_info("h", ("192.168.1.5",), True)})
    book = topology.address_book(index, {"10.96.0.10": ("kube-system", "dns")})
    assert book == {"10.0.0.2": {"namespace": "shop", "pod": "a"}, "192.168.1.5": {"node": "node-1"},
                    "10.96.0.10": {"namespace": "kube-system", "service": "dns"}}
    assert topology.remote_end("10.9.9.9", 443, book) == {"ip": "10.9.9.9", "port": 443}
    assert topology.remote_end("10.9.9.9", None, book) == {"ip": "10.9.9.9"}


@pytest.mark.parametrize(("port", "protocol"), [(80, "http"), (8080, "http"), (53, "dns"), (6379, "redis"),
                                                (3306, "mysql"), (5432, "postgres"), (9092, "kafka"),
                                                (27017, "mongodb"), (7070, "tcp")])
def test_protocol_from_the_server_port(port: int, protocol: str) -> None:
    assert topology.protocol_of(port) == protocol
    assert topology.protocol_of(port, "http") == "http"


# ---- merging ---------------------------------------------------------------------

A = {"namespace": "shop", "pod": "web"}
B = {"namespace": "shop", "pod": "db"}


def node_doc(node: str, entries: list[tuple[EdgeKey, EdgeCounts, dict[str, Any]]],
             book: dict[str, Any], evicted: int = 0) -> dict[str, Any]:
    return topology.node_document(node, entries, book, evicted)


def test_one_node_seeing_both_ends_shows_one_edge_counted_once() -> None:
    book = {"10.0.0.1": A, "10.0.0.2": B}
    client = EdgeKey(1, "10.0.0.1", "10.0.0.2", 5432, "client")
    server = EdgeKey(2, "10.0.0.2", "10.0.0.1", 5432, "server")
    doc = node_doc("n1", [(client, counts(4, 400, 900, 1, (100, 300)), A),
                          (server, counts(4, 900, 400, 2, (200,)), B)], book)
    [edge] = doc["edges"]
    assert (edge["source"], edge["destination"], edge["port"], edge["protocol"]) == (A, B, 5432, "postgres")
    assert (edge["connections"], edge["bytesSent"], edge["bytesReceived"], edge["bytes"]) == (4, 400, 900, 1300)
    assert edge["drops"] == 3  # each side retransmits its own segments
    assert edge["latencyAvgSeconds"] == pytest.approx(200e-6)
    assert edge["latencyP99Seconds"] == pytest.approx(512e-6)  # the slot of 300us is (256, 512]
    assert edge["observedBy"] == ["client", "server"] and edge["requests"] == 0


def test_merge_across_nodes_resolves_addresses_and_never_double_counts() -> None:
    # web on n1 talks to db on n2: n1 knows only web, n2 only db.
    n1 = node_doc("n1", [(EdgeKey(1, "10.0.0.1", "10.0.1.2", 5432, "client"), counts(3, 30, 60), A)],
                  {"10.0.0.1": A})
    n2 = node_doc("n2", [(EdgeKey(2, "10.0.1.2", "10.0.0.1", 5432, "server"), counts(3, 60, 30), B)],
                  {"10.0.1.2": B}, evicted=4)
    assert n1["edges"][0]["destination"] == {"ip": "10.0.1.2", "port": 5432}
    assert n2["edges"][0]["source"] == {"ip": "10.0.0.1"}
    graph = topology.merge([n1, n2])
    [edge] = graph["edges"]
    assert (edge["source"], edge["destination"]) == (A, B)
    assert (edge["connections"], edge["bytesSent"], edge["bytesReceived"]) == (3, 30, 60)
    assert edge["observedBy"] == ["client", "server"]
    assert graph["nodes"] == ["n1", "n2"] and graph["evictedEdges"] == 4
    # The same node's view given twice counts once; order does not matter.
    assert topology.merge([n2, n1, copy.deepcopy(n1)])["edges"] == graph["edges"]


def test_server_side_alone_fills_an_edge_whose_client_was_not_seen() -> None:
    n2 = node_doc("n2", [(EdgeKey(2, "10.0.1.2", "203.0.113.7", 80, "server"), counts(2, 500, 50), B)], {})
    [edge] = topology.merge([n2])["edges"]
    assert edge["source"] == {"ip": "203.0.113.7"} and edge["destination"] == B
    assert (edge["connections"], edge["bytesSent"], edge["bytesReceived"]) == (2, 50, 500)
    assert edge["observedBy"] == ["server"]


def test_same_side_from_two_sockets_adds_up() -> None:
    book = {"10.0.0.2": B}
    entries = [(EdgeKey(1, "10.0.0.1", "10.0.0.2", 80, "client"), counts(1, 10, 20), A),
               (EdgeKey(7, "10.0.0.1", "10.0.0.2", 80, "client"), counts(2, 5, 5), A)]  # a second container
    [edge] = node_doc("n1", entries, book)["edges"]
    assert (edge["connections"], edge["bytesSent"], edge["bytesReceived"]) == (3, 15, 25)


def test_requests_and_protocol_come_from_the_l7_reading_across_nodes() -> None:
    """Port 7000 names no protocol; l7 parsed redis on both sockets (and a
    few http on the client's): the most parsed names the edge; requests from
    the client's side, never added to the server's."""
    client = EdgeKey(1, "10.0.0.1", "10.0.1.2", 7000, "client")
    server = EdgeKey(2, "10.0.1.2", "10.0.0.1", 7000, "server")
    n1 = topology.node_document("n1", [(client, counts(1, 30, 60), A)], {"10.0.0.1": A}, parsed={
        client: [topology.EdgeRequests("redis", 9, 9000), topology.EdgeRequests("http", 2, 100)]})
    n2 = topology.node_document("n2", [(server, counts(1, 60, 30), B)], {"10.0.1.2": B}, parsed={
        server: [topology.EdgeRequests("redis", 9, 5000)]})
    [edge] = topology.merge([n1, n2])["edges"]
    assert (edge["protocol"], edge["requests"]) == ("redis", 11)
    assert edge["sides"]["server"]["protocols"] == {"redis": 9}
    # Without l7: the port decides, and no requests are claimed.
    [plain] = node_doc("n1", [(client, counts(1, 30, 60), A)], {"10.0.0.1": A})["edges"]
    assert (plain["protocol"], plain["requests"]) == ("tcp", 0)


# ---- drawing ---------------------------------------------------------------------


def sample_graph() -> dict[str, Any]:
    svc = {"namespace": "shop", "service": "db"}
    n1 = node_doc("n1", [(EdgeKey(1, "10.0.0.1", "10.0.0.2", 5432, "client"), counts(3, 3000, 6000), A),
                         (EdgeKey(1, "10.0.0.1", "10.96.0.5", 80, "client"), counts(1, 10, 10), A)],
                  {"10.0.0.2": B, "10.96.0.5": svc})
    return topology.merge([n1])


def test_text_dot_and_mermaid_name_every_end_and_edge() -> None:
    graph = sample_graph()
    text = topology.render_text(graph)
    assert "shop/web" in text and "postgres:5432─▶ shop/db" in text and "http:80─▶ shop/svc/db" in text
    dot = topology.render_dot(graph)
    assert '"shop/web" -> "shop/db"' in dot and '"shop/svc/db" [shape=hexagon]' in dot
    mermaid = topology.render_mermaid(graph)
    assert mermaid.startswith("flowchart LR") and mermaid.count("-->") == 2
    assert topology.render_text(topology.merge([])) == "no TCP edges seen\n"


def test_max_edges_is_validated() -> None:
    assert config.TopologyConfig().maxEdges == topology.DEFAULT_MAX_EDGES
    with pytest.raises(ValueError, match="maxEdges"):
        config.config_from_dict({"topology": {"maxEdges": 0}})
    with pytest.raises(ValueError, match="maxEdges"):
        config.config_from_dict({"topology": {"maxEdges": topology.MAX_EDGES + 1}})


def test_node_document_names_socket_owners_and_skips_uncounted_cgroups() -> None:
    from kpod_agent import view
    from kpod_agent.collectors.base import Snapshot
    from kpod_agent.pods import CgroupEntry

    pods_ = {"web": pod_info("web", ("10.0.0.1",)), "agent": pod_info("agent", ("192.168.1.5",), True)}
    entries = {1: CgroupEntry(1, "p/web", "shop", "web", "app", "web"),
               2: CgroupEntry(2, "p/agent", "shop", "agent", "app", "agent")}
    index = PodIndex(entries=entries, pods=pods_)
    snap = Snapshot(edges=(
        (EdgeKey(1, "10.0.0.1", "10.96.0.7", 80, "client"), counts(1, 5, 6)),
        (EdgeKey(2, "192.168.1.5", "10.0.0.1", 9090, "client"), counts(2, 7, 8)),
        (EdgeKey(3, "10.0.0.3", "10.0.0.1", 80, "client"), counts(9)),  # cgroup 3: no counted pod
    ), edges_evicted=5)
    network = view.CollectorView(name="network", specs=(), attached=True, snapshot=snap,
                                 allowed={1: 0, 2: 0}, resolved={})
    v = view.CollectionView(node_name="node-1", index=index, collectors={"network": network},
                            services={"10.96.0.7": ("shop", "api")})
    doc = v.topology
    assert [(e["source"], e["destination"], e["connections"]) for e in doc["edges"]] == [
        ({"node": "node-1"}, {"namespace": "shop", "pod": "web"}, 2),  # a hostNetwork pod is its node
        ({"namespace": "shop", "pod": "web"}, {"namespace": "shop", "service": "api"}, 1),
    ]
    assert doc["node"] == "node-1" and doc["evictedEdges"] == 5
    assert v.topology is doc  # built once per view
    assert view.CollectionView(node_name="n").topology["edges"] == []  # no network collector: no edges
