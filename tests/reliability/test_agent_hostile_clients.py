"""Hostile HTTP clients against the real `kpod-agent` command (loopback only):
huge never-ending request heads, a thousand clients dripping bytes, a body
smuggled behind a GET, doubled slashes. Through all of it a scraper that
asks properly is answered, and the agent stays far under its 256 MiB
DaemonSet memory limit.

Clients are non-blocking sockets driven by one thread each kind, so a
thousand of them cost the test little; every loop ends on its own clock.
Run with -s for the figures.
"""
from __future__ import annotations

import http.client
import resource
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.kernel_node import KernelNode
from tests.support.procfs import rss_kib
from tests.support.running_agent import RunningAgent, running_agent

LIMIT_MIB = 256  # the DaemonSet's memory limit
CLIENTS = 1000


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * CLIENTS:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * CLIENTS), hard))


@pytest.fixture(scope="module")
def agent(node: KernelNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    with running_agent(node, tmp_path_factory.mktemp("hostile")) as running:
        yield running


class Scraper(threading.Thread):
    """Prometheus: GET /metrics once a second, each answer timed."""

    def __init__(self, agent: RunningAgent) -> None:
        super().__init__(daemon=True)
        self.agent = agent
        self.stop = threading.Event()
        self.results: list[tuple[int, float]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.agent.port, timeout=10)
                conn.request("GET", "/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0"})
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                ok = resp.status == 200 and b"kpod_agent_config_generation" in body
                self.results.append((200 if ok else resp.status, time.monotonic() - started))
            except (OSError, http.client.HTTPException):
                self.results.append((0, time.monotonic() - started))
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def _connect(port: int) -> socket.socket:
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    return s


def _answered(agent: RunningAgent, scraper: Scraper) -> None:
    # Every scrape answered within Prometheus' default scrape timeout, 10 s
    # (its time is printed, not asserted: this machine is shared).
    codes = [code for code, _ in scraper.results]
    assert len(codes) >= 2 and set(codes) == {200}, f"scrapes: {scraper.results}"
    assert agent.get("/healthz") == (200, "ok\n")


def test_huge_request_heads_stay_under_the_memory_limit(agent: RunningAgent) -> None:
    """1,000 clients each sending 99 header lines of 60 kB and never the
    blank line that ends a head; each reconnects when cut off."""
    head = [b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
            *(b"X-Big-%02d: " % i + b"a" * 60_000 + b"\r\n" for i in range(99))]
    before = rss_kib(agent.proc.pid)
    peak = before
    scraper = Scraper(agent)
    scraper.start()
    socks: dict[socket.socket, list[int]] = {}  # socket -> [line, offset] still to send
    sent = 0
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            while len(socks) < CLIENTS:
                socks[_connect(agent.port)] = [0, 0]
            for s, where in list(socks.items()):
                try:
                    if where[0] < len(head):  # one send per client per round: the test must not eat the CPU
                        n = s.send(memoryview(head[where[0]])[where[1]:])
                        sent += n
                        where[1] += n
                        if where[1] == len(head[where[0]]):
                            where[0], where[1] = where[0] + 1, 0
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # cut off by the server: a new client takes its place
                    s.close()
                    del socks[s]
            peak = max(peak, rss_kib(agent.proc.pid))
            assert peak < LIMIT_MIB * 1024, f"agent RSS {peak / 1024:.0f} MiB"
            time.sleep(0.05)
    finally:
        scraper.stop.set()
        scraper.join(15)
        for s in socks:
            s.close()
    after = rss_kib(agent.proc.pid)
    print(f"\nhuge heads: {CLIENTS} clients, {sent / 2**20:.0f} MiB sent; agent RSS {before / 1024:.0f} MiB"
          f" -> peak {peak / 1024:.0f} MiB -> {after / 1024:.0f} MiB after; scrapes "
          f"{len(scraper.results)}, slowest {max(t for _, t in scraper.results):.2f} s; "
          f"{sorted(round(t, 2) for _, t in scraper.results)[-5:]}")
    assert peak - before < 64 * 1024, f"RSS grew {(peak - before) / 1024:.0f} MiB"
    _answered(agent, scraper)


def test_dripping_clients_never_starve_the_scraper(agent: RunningAgent) -> None:
    """Slowloris: 1,000 connections each sending one byte every 2 s (and
    reconnecting when cut off), while Prometheus scrapes once a second."""
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"d" * 10_000
    socks: dict[socket.socket, int] = {}  # socket -> bytes sent
    next_drip = 0.0
    reconnects = 0
    scraper = Scraper(agent)
    scraper.start()
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            while len(socks) < CLIENTS:
                socks[_connect(agent.port)] = 0
            if time.monotonic() >= next_drip:
                next_drip = time.monotonic() + 2.0
                for s, offset in list(socks.items()):
                    try:
                        socks[s] += s.send(request[offset:offset + 1])
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        s.close()
                        del socks[s]
                        reconnects += 1
            time.sleep(0.05)
    finally:
        scraper.stop.set()
        scraper.join(15)
        for s in socks:
            s.close()
    print(f"\ndripping: {CLIENTS} clients, {reconnects} cut off and reconnected; scrapes "
          f"{len(scraper.results)}, slowest {max(t for _, t in scraper.results):.2f} s; "
          f"{sorted(round(t, 2) for _, t in scraper.results)[-5:]}")
    _answered(agent, scraper)


def _exchange(agent: RunningAgent, data: bytes) -> bytes:
    """Everything the agent sends back until it closes (or 3 s of silence)."""
    with socket.create_connection(("127.0.0.1", agent.port), timeout=3) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


@pytest.mark.parametrize("framing", [
    b"Content-Length: %d\r\n",
    b"Transfer-Encoding: chunked\r\n",
])
def test_a_body_on_a_get_is_never_a_second_request(agent: RunningAgent, framing: bytes) -> None:
    smuggled = b"GET /config HTTP/1.1\r\nHost: x\r\n\r\n"
    if b"chunked" in framing:
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    else:
        body = smuggled
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + (framing % len(body) if b"%d" in framing else framing)
    answer = _exchange(agent, head + b"\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1, "a second answer: the body was read as a request"
    assert b'"generation"' not in answer
    assert agent.get("/healthz") == (200, "ok\n")


@pytest.mark.parametrize("path", ["//metrics", "///config", "//healthz"])
def test_doubled_slashes_and_dots_are_404(agent: RunningAgent, path: str) -> None:
    answer = _exchange(agent, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 404 "), (path, answer[:200])
    assert agent.get("/metrics")[0] == 200
