"""kpod-agent topology: reads several agents, reports the ones it cannot
read, merges the others and draws the graph (text, DOT, Mermaid, PNG)."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kpod_agent import topology, topology_cli
from kpod_agent.topology import EdgeCounts, EdgeKey

WEB = {"namespace": "shop", "pod": "web"}
DB = {"namespace": "shop", "pod": "db"}
CACHE = {"namespace": "shop", "pod": "cache"}


def counts(connections: int, sent: int, received: int) -> EdgeCounts:
    return EdgeCounts(connections, sent, received)


# Two nodes: web on n1 calls db and cache on n2, and an address outside the cluster.
N1 = topology.node_document("n1", [
    (EdgeKey(1, "10.0.1.2", "10.0.2.2", 5432, "client"), counts(4, 400, 4000), WEB),
    (EdgeKey(1, "10.0.1.2", "10.0.2.3", 6379, "client"), counts(9, 90, 900), WEB),
], {"10.0.1.2": WEB})
N2 = topology.node_document("n2", [
    (EdgeKey(2, "10.0.2.2", "10.0.1.2", 5432, "server"), counts(4, 4000, 400), DB),
    (EdgeKey(3, "10.0.2.3", "10.0.1.2", 6379, "server"), counts(9, 900, 90), CACHE),
    (EdgeKey(3, "10.0.2.3", "198.51.100.7", 6379, "server"), counts(1, 5, 5), CACHE),
], {"10.0.2.2": DB, "10.0.2.3": CACHE})


class _Handler(BaseHTTPRequestHandler):
    docs: dict[str, Any] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        doc = self.docs.get(self.path)
        body = json.dumps(doc).encode() if doc is not None else b"no"
        self.send_response(200 if doc is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def agents() -> Iterator[str]:
    """Base URL of a server answering /n1/topology and /n2/topology like two agents."""
    _Handler.docs = {"/n1/topology": N1, "/n2/topology": N2}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def dot_binary() -> str:
    found = shutil.which("dot")
    if found is None:
        pytest.fail("Graphviz `dot` is required: apt-get install graphviz (scripts/setup.sh --test)", pytrace=False)
    return found


def graph_of_dot(dot: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Nodes and edges as Graphviz itself reads the DOT (dot -Tjson)."""
    done = subprocess.run([dot_binary(), "-Tjson"], input=dot.encode(), capture_output=True, check=True)
    parsed = json.loads(done.stdout)
    names = {o["_gvid"]: o["name"] for o in parsed.get("objects", [])}
    return set(names.values()), {(names[e["tail"]], names[e["head"]]) for e in parsed.get("edges", [])}


EXPECTED_NODES = {"shop/web", "shop/db", "shop/cache", "198.51.100.7"}
EXPECTED_EDGES = {("shop/web", "shop/db"), ("shop/web", "shop/cache"), ("198.51.100.7", "shop/cache")}


def test_dot_of_two_agents_has_every_end_and_each_edge_once(
        agents: str, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert topology_cli.main(["--url", f"{agents}/n1/topology,{agents}/n2/topology", "--format", "dot"]) == 0
    dot = capsysbinary.readouterr().out.decode()
    nodes, edges = graph_of_dot(dot)
    assert nodes == EXPECTED_NODES
    assert edges == EXPECTED_EDGES
    assert dot.count(" -> ") == 3  # seen from both ends, still one edge each


def test_png_is_a_valid_image_of_the_same_graph(agents: str, tmp_path: Path) -> None:
    out = tmp_path / "graph.png"
    urls = [f"--url={agents}/n1/topology", f"--url={agents}/n2/topology"]
    assert topology_cli.main([*urls, "--format", "png", "--output", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 200 <= width <= 4000 and 50 <= height <= 4000, (width, height)
    # The image is Graphviz's drawing of exactly the DOT checked above.
    expected = subprocess.run([dot_binary(), "-Tpng"], input=topology.render_dot(topology.merge([N1, N2])).encode(),
                              capture_output=True, check=True).stdout
    assert data == expected


def test_an_unreachable_agent_is_named_and_the_others_still_drawn(
        agents: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = topology_cli.main(["--url", f"{agents}/n1/topology,{agents}/gone/topology,127.0.0.1:9", "--format",
                              "mermaid"])
    out, err = capsys.readouterr()
    assert code == 3
    assert f"{agents}/gone/topology answered HTTP 404" in err and "cannot reach http://127.0.0.1:9/topology" in err
    assert out.startswith("flowchart LR") and out.count("-->") == 2  # n1's two edges, db and cache by address


def test_text_draws_the_merged_graph(agents: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert topology_cli.main(["--url", f"{agents}/n2/topology", "--url", f"{agents}/n1/topology"]) == 0
    out = capsys.readouterr().out
    assert "shop/web\n  ├─redis:6379─▶ shop/cache  9 conn" in out
    assert "  └─postgres:5432─▶ shop/db  4 conn, 4.3 KiB (→ 400 B, ← 3.9 KiB)" in out
    assert "3 edges from 2 node(s): n1, n2" in out


def test_nothing_readable_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert topology_cli.main(["--url", "127.0.0.1:9"]) == 1
    assert "no agent could be read" in capsys.readouterr().err
    assert topology_cli.main(["--url", "ftp://x"]) == 2
