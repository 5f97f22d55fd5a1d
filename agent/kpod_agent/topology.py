"""Service topology: the TCP edges the kernel saw, resolved to pods, merged, drawn. Pure.

The network collector's `tcp_edges` map counts, per (owner cgroup, local
address, remote address, server port, role), established connections, bytes
each way, retransmits and smoothed-RTT samples. Here:

- `EdgeStore` mirrors that map in the agent with a cap (`topology.maxEdges`):
  the least recently changed entries are evicted (and deleted from the kernel
  by the collector), evictions counted;
- `node_document` turns the entries of one node into the `/topology` JSON:
  the local end is the pod owning the socket (by cgroup id), the remote end
  the pod, Service or node behind the remote address, else `{ip, port}`;
- `merge` folds several nodes' documents into one graph without counting a
  connection twice when both of its ends were seen (rules in docs/topology.md);
- `render_text`, `render_dot`, `render_mermaid` draw the merged graph.

End identity (what makes two ends the same node of the graph):
`{namespace, pod}`, `{namespace, service}`, `{node}` (hostNetwork pods share
their node's address, so they are their node on both sides of an edge),
`{ip, port}` for an unknown server and `{ip}` for an unknown client (its
port is ephemeral and not kept).
"""
from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kpod_agent import config
from kpod_agent.pods import PodIndex

Role = Literal["client", "server"]
End = dict[str, Any]
"""One end of an edge as served: see the module docstring for its forms."""

# Slots of an RTT histogram (KPOD_SLOTS in kpod_common.h); unit microseconds.
RTT_SLOTS = 32
RTT_UNIT_SECONDS = 1e-6
DEFAULT_MAX_EDGES = config.DEFAULT_TOPOLOGY_EDGES
MAX_EDGES = config.MAX_TOPOLOGY_EDGES
"""Upper bound of topology.maxEdges, also the kernel map's capacity."""

# Server port -> protocol when no application-level reading names it.
WELL_KNOWN_PORTS = {
    80: "http", 8080: "http", 53: "dns", 6379: "redis", 3306: "mysql",
    5432: "postgres", 9092: "kafka", 27017: "mongodb",
}


@dataclass(frozen=True)
class EdgeKey:
    """One entry of the kernel's edge map."""

    cgroup_id: int
    local: str
    remote: str
    port: int
    """The server's port (the remote port for a client, the local one for a server)."""
    role: Role


@dataclass(frozen=True)
class EdgeCounts:
    connections: int = 0
    bytes_sent: int = 0
    """Sent by the socket's owner (the client for a client entry)."""
    bytes_received: int = 0
    retransmits: int = 0
    rtt_slots: tuple[int, ...] = (0,) * RTT_SLOTS
    rtt_sum_us: int = 0


@dataclass(frozen=True)
class EdgeRequests:
    """What the l7 collector parsed on one edge entry, for one protocol."""

    protocol: str
    requests: int = 0
    duration_ns: int = 0


def ip_text(raw: bytes) -> str:
    """16 address bytes as the tracepoints give them (IPv4-mapped for IPv4) -> text."""
    addr = ipaddress.IPv6Address(bytes(raw))
    return str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)


def ip_bytes(text: str) -> bytes:
    """The inverse of `ip_text`: 16 bytes, IPv4 as IPv4-mapped IPv6."""
    addr = ipaddress.ip_address(text)
    if addr.version == 4:
        return b"\0" * 10 + b"\xff\xff" + addr.packed
    return addr.packed


class EdgeStore:
    """The edges of one node, at most `max_edges`, least recently changed
    evicted first. Values are the kernel's cumulative counts."""

    def __init__(self, max_edges: int = DEFAULT_MAX_EDGES) -> None:
        self.max_edges = max_edges
        self.evicted_total = 0
        self._edges: OrderedDict[EdgeKey, EdgeCounts] = OrderedDict()

    def __len__(self) -> int:
        return len(self._edges)

    def update(self, reading: Mapping[EdgeKey, EdgeCounts]) -> list[EdgeKey]:
        """Take a full reading of the kernel map; returns the evicted keys,
        which the caller deletes from the kernel. Entries gone from the
        kernel (their cgroup forgotten) are gone here too."""
        for key in [k for k in self._edges if k not in reading]:
            del self._edges[key]
        for key, counts in reading.items():
            if self._edges.get(key) != counts:
                self._edges[key] = counts
                self._edges.move_to_end(key)
        return self._evict()

    def resize(self, max_edges: int) -> list[EdgeKey]:
        self.max_edges = max_edges
        return self._evict()

    def forget(self, cgroup_ids: set[int]) -> None:
        for key in [k for k in self._edges if k.cgroup_id in cgroup_ids]:
            del self._edges[key]

    def items(self) -> list[tuple[EdgeKey, EdgeCounts]]:
        return list(self._edges.items())

    def _evict(self) -> list[EdgeKey]:
        evicted = []
        while len(self._edges) > self.max_edges:
            key, _ = self._edges.popitem(last=False)
            evicted.append(key)
        self.evicted_total += len(evicted)
        return evicted


# ---- resolution ---------------------------------------------------------------


def pod_end(namespace: str, pod: str) -> End:
    return {"namespace": namespace, "pod": pod}


def address_book(index: PodIndex, services: Mapping[str, tuple[str, str]] | None = None) -> dict[str, End]:
    """IP -> the end it names: pods by their pod IPs, hostNetwork pods as
    their node, Service ClusterIPs (ip -> (namespace, name)) as the Service."""
    book: dict[str, End] = {}
    for ip, (namespace, name) in (services or {}).items():
        book[ip] = {"namespace": namespace, "service": name}
    for pod in index.pods.values():
        for ip in pod.ips:
            if pod.host_network:
                book.setdefault(ip, {"node": pod.node_name})
            else:
                book[ip] = pod_end(pod.namespace, pod.name)
    return book


def end_id(end: Mapping[str, Any]) -> str:
    """The identity of an end, also its node name in DOT and Mermaid."""
    if "pod" in end:
        return f"{end['namespace']}/{end['pod']}"
    if "service" in end:
        return f"{end['namespace']}/svc/{end['service']}"
    if "node" in end:
        return f"node/{end['node']}"
    return f"{end['ip']}:{end['port']}" if "port" in end else str(end["ip"])


def remote_end(ip: str, port: int | None, book: Mapping[str, End]) -> End:
    """The end behind a remote address; `port` None for a client (ephemeral port)."""
    known = book.get(ip)
    if known is not None:
        return dict(known)
    return {"ip": ip, "port": port} if port is not None else {"ip": ip}


def protocol_of(port: int, l7_protocol: str | None = None) -> str:
    """The edge's protocol: what the l7 collector parsed on it when there is
    a reading, else the well-known protocol of the server port, else tcp."""
    if l7_protocol:
        return l7_protocol
    return WELL_KNOWN_PORTS.get(port, "tcp")


# ---- one node's document ---------------------------------------------------------


def _side(counts: EdgeCounts, parsed: Sequence[EdgeRequests] = ()) -> dict[str, Any]:
    """One socket entry's counts in the served form (an observation's side),
    with the requests the l7 collector parsed on it by protocol."""
    return {
        "connections": counts.connections, "bytesSent": counts.bytes_sent,
        "bytesReceived": counts.bytes_received, "retransmits": counts.retransmits,
        "rtt": {"slots": list(counts.rtt_slots), "sumSeconds": counts.rtt_sum_us * RTT_UNIT_SECONDS},
        "requests": sum(r.requests for r in parsed),
        "protocols": {r.protocol: r.requests for r in parsed if r.requests},
    }


def node_document(node: str, entries: Iterable[tuple[EdgeKey, EdgeCounts, End]],
                  book: Mapping[str, End], evicted_total: int = 0,
                  parsed: Mapping[EdgeKey, Sequence[EdgeRequests]] | None = None) -> dict[str, Any]:
    """The `/topology` answer of one node. `entries` are the store's items
    with the local end already resolved (the caller skips entries of
    cgroups that are no counted pod's); `book` resolves remote addresses
    and is served too, so `merge` can resolve what another node knows.
    `parsed`: the l7 collector's requests per edge entry, when it runs."""
    observations: list[dict[str, Any]] = []
    for key, counts, local in entries:
        if key.role == "client":
            source, destination = local, remote_end(key.remote, key.port, book)
        else:
            source, destination = remote_end(key.remote, None, book), local
        observations.append({"source": source, "destination": destination, "port": key.port,
                             "side": key.role, **_side(counts, (parsed or {}).get(key, ()))})
    doc = {"node": node, "addresses": dict(sorted(book.items())), "evictedEdges": evicted_total}
    merged = merge([{**doc, "observations": observations}])
    return {"node": node, **{k: v for k, v in merged.items() if k != "nodes"}}


# ---- merging ---------------------------------------------------------------------


_COUNTS = ("connections", "bytesSent", "bytesReceived", "retransmits", "requests")


def _slots(raw: Any) -> list[int]:
    """RTT slots as served, exactly RTT_SLOTS of them (another agent's document may be short or long)."""
    slots = [int(x) for x in list(raw or [])[:RTT_SLOTS]]
    return slots + [0] * (RTT_SLOTS - len(slots))


def _add_side(into: dict[str, Any], side: Mapping[str, Any]) -> None:
    theirs = side.get("rtt") or {}
    protocols = into.setdefault("protocols", {})
    for name, count in (side.get("protocols") or {}).items():
        protocols[str(name)] = protocols.get(str(name), 0) + int(count)
    if "rtt" not in into:
        into.update({name: int(side.get(name, 0)) for name in _COUNTS})
        into["rtt"] = {"slots": _slots(theirs.get("slots")), "sumSeconds": float(theirs.get("sumSeconds", 0.0))}
        return
    for name in _COUNTS:
        into[name] += int(side.get(name, 0))
    rtt = into["rtt"]
    rtt["slots"] = [a + b for a, b in zip(rtt["slots"], _slots(theirs.get("slots")), strict=True)]
    rtt["sumSeconds"] += float(theirs.get("sumSeconds", 0.0))


def _reresolve(end: Mapping[str, Any], book: Mapping[str, End]) -> End:
    if "ip" in end and end["ip"] in book:
        return dict(book[end["ip"]])
    return dict(end)


def p99_seconds(slots: Sequence[int]) -> float | None:
    """Upper bound of the log2 slot holding the 99th percentile (None: no samples)."""
    total = sum(slots)
    if total == 0:
        return None
    rank = math.ceil(0.99 * total)
    running = 0
    for slot, count in enumerate(slots):
        running += count
        if running >= rank:
            return float(2 ** slot) * RTT_UNIT_SECONDS
    return None


def _edge(source: End, destination: End, port: int, sides: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """An edge's served fields from its sides (docs/topology.md, "Merging"):
    connections and bytes from the client's socket when it was seen, else
    from the server's; drops are both sides' retransmits (each side
    retransmits its own segments); latency is every RTT sample of both."""
    client, server = sides.get("client"), sides.get("server")
    if client is not None:
        connections, sent, received = client["connections"], client["bytesSent"], client["bytesReceived"]
        requests = client["requests"]
    else:
        assert server is not None
        connections, sent, received = server["connections"], server["bytesReceived"], server["bytesSent"]
        requests = server["requests"]
    rtts = [side["rtt"] for side in sides.values()]
    slots = rtts[0]["slots"] if len(rtts) == 1 else [a + b for a, b in zip(*(r["slots"] for r in rtts), strict=True)]
    rtt_sum = sum(r["sumSeconds"] for r in rtts)
    samples = sum(slots)
    # Requests need application-level parsing (the l7 collector); without it
    # none are claimed, and `connections` says how much the edge was used.
    # The protocol it parsed most on the edge names it, else the port.
    parsed: dict[str, int] = {}
    for side in sides.values():
        for name, count in side.get("protocols", {}).items():
            parsed[name] = parsed.get(name, 0) + count
    protocol = protocol_of(port, max(sorted(parsed), key=parsed.__getitem__) if parsed else None)
    return {
        "source": source, "destination": destination, "port": port, "protocol": protocol,
        "requests": requests, "connections": connections,
        "bytes": sent + received, "bytesSent": sent, "bytesReceived": received,
        "latencyAvgSeconds": rtt_sum / samples if samples else None,
        "latencyP99Seconds": p99_seconds(slots) if samples else None,
        "drops": sum(side["retransmits"] for side in sides.values()),
        "observedBy": sorted(sides),
        "sides": {name: sides[name] for name in sorted(sides)},
    }


def merge(documents: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One graph from several nodes' `/topology` documents.

    A node's document counts once even when given twice (the last wins).
    Ends still named by address are resolved with every node's addresses.
    The same side of one edge from several nodes adds up (different
    sockets); the client's and the server's sides of one edge are kept
    apart and never added, so a connection seen by both ends counts once."""
    by_node: dict[str, Mapping[str, Any]] = {}
    for doc in documents:
        by_node[str(doc.get("node", ""))] = doc
    book: dict[str, End] = {}
    for doc in by_node.values():
        for ip, end in (doc.get("addresses") or {}).items():
            book.setdefault(ip, end)
    grouped: dict[tuple[str, str, int], tuple[End, End, dict[str, dict[str, Any]]]] = {}
    for doc in by_node.values():
        for obs in _observations(doc):
            source, destination = _reresolve(obs["source"], book), _reresolve(obs["destination"], book)
            port = int(obs["port"])
            key = (end_id(source), end_id(destination), port)
            entry = grouped.setdefault(key, (source, destination, {}))
            _add_side(entry[2].setdefault(str(obs["side"]), {}), obs)
    edges = [_edge(src, dst, key[2], sides) for key, (src, dst, sides) in sorted(grouped.items())]
    return {
        "nodes": sorted(by_node),
        "addresses": dict(sorted(book.items())),
        "evictedEdges": sum(int(doc.get("evictedEdges", 0)) for doc in by_node.values()),
        "edges": edges,
    }


def _observations(doc: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """A node document's observations: raw ones (being built) or its edges' sides."""
    if "observations" in doc:
        yield from doc["observations"]
        return
    for edge in doc.get("edges") or []:
        for side, counts in (edge.get("sides") or {}).items():
            yield {"source": edge["source"], "destination": edge["destination"], "port": edge["port"],
                   "side": side, **counts}


# ---- drawing ---------------------------------------------------------------------


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f}us"
    if value < 1:
        return f"{value * 1e3:.1f}ms"
    return f"{value:.2f}s"


def edge_label(edge: Mapping[str, Any]) -> str:
    return (f"{edge['protocol']}:{edge['port']} {edge['connections']} conn "
            f"{human_bytes(edge['bytes'])} drops {edge['drops']}")


def render_text(graph: Mapping[str, Any]) -> str:
    """The graph as a terminal drawing: each source, then its edges as branches."""
    edges = graph.get("edges") or []
    if not edges:
        return "no TCP edges seen\n"
    by_source: dict[str, list[Mapping[str, Any]]] = {}
    for edge in edges:
        by_source.setdefault(end_id(edge["source"]), []).append(edge)
    lines = []
    for source in sorted(by_source):
        lines.append(source)
        group = by_source[source]
        for i, edge in enumerate(group):
            branch = "└─" if i == len(group) - 1 else "├─"
            lines.append(f"  {branch}{edge['protocol']}:{edge['port']}─▶ {end_id(edge['destination'])}  "
                         f"{edge['connections']} conn, {human_bytes(edge['bytes'])} "
                         f"(→ {human_bytes(edge['bytesSent'])}, ← {human_bytes(edge['bytesReceived'])}), "
                         f"rtt avg {human_seconds(edge['latencyAvgSeconds'])} "
                         f"p99 {human_seconds(edge['latencyP99Seconds'])}, drops {edge['drops']}")
    nodes = ", ".join(graph.get("nodes") or []) or "-"
    lines.append(f"\n{len(edges)} edges from {len(graph.get('nodes') or [])} node(s): {nodes}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _shape(end: Mapping[str, Any]) -> str:
    if "service" in end:
        return "hexagon"
    if "node" in end:
        return "box3d"
    if "ip" in end:
        return "ellipse"
    return "box"


def graph_ends(graph: Mapping[str, Any]) -> dict[str, End]:
    """end id -> end, of every end of the graph's edges."""
    ends: dict[str, End] = {}
    for edge in graph.get("edges") or []:
        for end in (edge["source"], edge["destination"]):
            ends.setdefault(end_id(end), end)
    return dict(sorted(ends.items()))


def render_dot(graph: Mapping[str, Any]) -> str:
    """Graphviz DOT: node names are the end ids, one edge per graph edge."""
    lines = ["digraph topology {", "  rankdir=LR;", '  node [fontname="sans-serif"];',
             '  edge [fontname="sans-serif", fontsize=10];']
    for ident, end in graph_ends(graph).items():
        lines.append(f"  {_quote(ident)} [shape={_shape(end)}];")
    for edge in graph.get("edges") or []:
        lines.append(f"  {_quote(end_id(edge['source']))} -> {_quote(end_id(edge['destination']))} "
                     f"[label={_quote(edge_label(edge))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_mermaid(graph: Mapping[str, Any]) -> str:
    """A Mermaid flowchart; node ids are n0, n1, ... with the end id as text."""
    ids = {ident: f"n{i}" for i, ident in enumerate(graph_ends(graph))}
    lines = ["flowchart LR"]
    for ident, short in ids.items():
        lines.append(f'  {short}["{_mermaid_text(ident)}"]')
    for edge in graph.get("edges") or []:
        lines.append(f"  {ids[end_id(edge['source'])]} -->|\"{_mermaid_text(edge_label(edge))}\"| "
                     f"{ids[end_id(edge['destination'])]}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")
