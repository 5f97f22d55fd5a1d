"""The agent's HTTP server under hostile clients: only its four endpoints,
GET only, and no request (garbage, huge, stalled, non-UTF-8, traversal)
stops it from answering everyone else.

The server is the real AgentHTTPServer with the real exporter, in this
process; the agent runs a config without BPF collectors, so no root needed.
"""
from __future__ import annotations

import gzip
import http.client
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from kpod_agent.agent import Agent
from kpod_agent.config import config_from_dict
from kpod_agent.exporter import KpodCollector
from kpod_agent.server import AgentHTTPServer
from tests.support.waiting import wait_for

ENDPOINTS = ("/metrics", "/healthz", "/readyz", "/config")


@pytest.fixture(scope="module")
def server() -> Iterator[AgentHTTPServer]:
    agent = Agent(node_name="node-1")
    assert agent.apply(config_from_dict({"profile": "custom", "collectors": {}, "generation": 5,
                                         "discovery": {"mode": "none", "interval": "1h"}}))
    registry = CollectorRegistry(auto_describe=False)
    exporter = KpodCollector(agent)
    registry.register(exporter)
    srv = AgentHTTPServer(("127.0.0.1", 0), agent, registry, metrics=exporter.exposition)
    srv.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    agent.shutdown()


@pytest.fixture(autouse=True)
def no_tracebacks(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Hostile clients are routine: no traceback on stderr, no error in the log."""
    yield
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[-2000:]


def request(srv: AgentHTTPServer, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=5)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def raw(srv: AgentHTTPServer, data: bytes, timeout: float = 5) -> bytes:
    """Send bytes as they are; the server's whole answer (until it closes or goes quiet)."""
    with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused the rest: its answer is still readable
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and len(b"".join(chunks)) > 12:
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), f"no HTTP answer: {answer[:100]!r}"
    return int(answer.split(b" ", 2)[1])


def alive(srv: AgentHTTPServer) -> None:
    assert request(srv, "GET", "/healthz") == (200, b"ok\n")


def test_the_four_endpoints_answer(server: AgentHTTPServer) -> None:
    codes = {path: request(server, "GET", path)[0] for path in ENDPOINTS}
    assert codes == dict.fromkeys(ENDPOINTS, 200)
    assert b"kpod_agent_config_generation 5.0" in request(server, "GET", "/metrics")[1]


def test_metrics_as_prometheus_asks_for_them(server: AgentHTTPServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    try:
        conn.request("GET", "/metrics", headers={
            "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            "Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert resp.getheader("Content-Encoding") == "gzip"
    text = gzip.decompress(body)
    assert text.endswith(b"# EOF\n") and b"kpod_agent_config_generation 5.0" in text


@pytest.mark.parametrize("path", [
    "/", "/index.html", "/metrics/", "/METRICS", "/metricsx", "/config.json",
    "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/config/../../etc/shadow",
    "/..%2f..%2fetc/passwd", "http://evil.example/metrics", "*", "//metrics", "///config",
])
def test_everything_else_is_404(server: AgentHTTPServer, path: str) -> None:
    answer = raw(server, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert status_of(answer) == 404
    assert b"root:" not in answer


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT"])
def test_methods_other_than_get_are_405(server: AgentHTTPServer, method: str) -> None:
    for path in ("/metrics", "/config", "/nope"):
        status, _ = request(server, method, path, body=b"x=1" if method in ("POST", "PUT", "PATCH") else None)
        assert status == 405, f"{method} {path} -> {status}"
    alive(server)


def test_unknown_method_is_refused_and_server_lives(server: AgentHTTPServer) -> None:
    answer = raw(server, b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(answer) in (405, 501)  # 501 is what RFC 9110 asks for an unknown method
    alive(server)


@pytest.mark.parametrize("line", [
    b"\x00\xffGARBAGE / HTTP/9\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /metrics HTTP/1.1 extra words\r\n\r\n",
    b"GET /metrics HTTP/2.0\r\n\r\n",
    b"GET /metrics FTP/1.0\r\n\r\n",
    b"\r\n\r\n\r\n",
])
def test_malformed_requests_get_an_error_not_a_crash(server: AgentHTTPServer, line: bytes) -> None:
    answer = raw(server, line, timeout=3)
    if line.strip():  # a request of blank lines is ignored and the connection closed
        assert status_of(answer) >= 400, answer[:200]
    alive(server)


@pytest.mark.parametrize("request_bytes", [
    b"GET /metrics HTTP/1.1\r\nno colon header\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nAccept: \xff\xfe\x00\r\n\r\n",
])
def test_malformed_headers_are_refused(server: AgentHTTPServer, request_bytes: bytes) -> None:
    # Strict: a parser that skips what it cannot read and a proxy in front
    # that reads it otherwise disagree on where a request ends (smuggling).
    assert status_of(raw(server, request_bytes)) == 400
    alive(server)


def test_invalid_utf8_paths(server: AgentHTTPServer) -> None:
    for path in (b"/\xff\xfe", b"/metrics\xc3\x28", b"/\xed\xa0\x80config", b"/%ff%fe"):
        answer = raw(server, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        # 400 when the bytes contain what Latin-1 calls whitespace (\xa0, \x85): a bad request line
        assert status_of(answer) in (400, 404), path
    alive(server)


def test_huge_request_line_and_headers_are_refused(server: AgentHTTPServer) -> None:
    long_line = b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\n\r\n"
    assert status_of(raw(server, long_line)) == 414
    long_header = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"b" * 200_000 + b"\r\n\r\n"
    assert status_of(raw(server, long_header)) in (400, 431)
    many_headers = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n"
    assert status_of(raw(server, many_headers)) == 431
    alive(server)


def test_stalled_clients_do_not_block_others(server: AgentHTTPServer) -> None:
    """Slowloris: many connections that send part of a request and stop.
    Others are still served at once, and the server drops the stalled ones
    when their request head is late."""
    stalled = []
    connect_times = []
    for i in range(64):
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30)
        connect_times.append(time.monotonic() - t0)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow-%d: " % i)
        stalled.append(s)
    try:
        # a connection refused by a full accept backlog is retried by TCP after >= 1 s
        assert max(connect_times) < 0.9, f"{sum(t > 0.9 for t in connect_times)} connects waited for a SYN retry"
        started = time.monotonic()
        for path in ENDPOINTS:
            assert request(server, "GET", path)[0] == 200
        assert time.monotonic() - started < 5, "a stalled client held up the others"

        closed_after: list[float] = []

        def wait_closed(sock: socket.socket) -> None:
            t0 = time.monotonic()
            try:
                data = sock.recv(1024)
                while data:
                    data = sock.recv(1024)
            except OSError:
                pass
            closed_after.append(time.monotonic() - t0)

        waiters = [threading.Thread(target=wait_closed, args=(s,)) for s in stalled]
        for w in waiters:
            w.start()
        for w in waiters:
            w.join(server.head_deadline + 10)
        assert len(closed_after) == len(stalled), "the server kept stalled connections open"
        assert max(closed_after) <= server.head_deadline + 2
    finally:
        for s in stalled:
            s.close()
    alive(server)


def test_client_that_vanishes_mid_response(server: AgentHTTPServer) -> None:
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        # closed with RST before reading the answer
    alive(server)
    assert request(server, "GET", "/config")[0] == 200


def test_connection_flood_is_bounded(server: AgentHTTPServer) -> None:
    """Idle connections past max_connections: the oldest incomplete ones are
    closed to make room, no thread is started per connection, and a client
    that sends its request is answered during the flood."""
    threads = threading.active_count()
    evicted = server.evicted
    flood = []
    try:
        for _ in range(server.max_connections + 150):
            s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            flood.append(s)
        wait_for(lambda: server.evicted - evicted >= 150, "the oldest connections closed to make room")
        assert len(server.connections) <= server.max_connections
        assert threading.active_count() <= threads + 2  # the render pool, if it started meanwhile
        assert request(server, "GET", "/healthz") == (200, b"ok\n")
        closed = 0
        for s in flood[:150]:  # the first in are the first out
            s.settimeout(1)
            try:
                closed += s.recv(1) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed == 150, closed
    finally:
        for s in flood:
            s.close()
    alive(server)
