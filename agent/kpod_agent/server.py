"""The agent's HTTP endpoints: /metrics, /healthz, /readyz, /config, /topology. Nothing else.

One asyncio event loop in one thread serves every connection; requests are
parsed by h11 (strict HTTP/1.1: a malformed length, a header without a
colon or a conflicting framing is a 400, never a second request); what a
client may cost is decided here, in one place:

- a request head (line + headers) is at most `HEAD_LIMIT` bytes and
  `MAX_HEADERS` lines, and must arrive within `HEAD_DEADLINE` of the
  connection being ready for it: a client that drips bytes is cut off;
- the heads being received hold at most `MAX_BUFFERED` bytes in all: past
  that the connection holding the most is dropped;
- at most `MAX_CONNECTIONS` connections: a new one closes the oldest that
  has not sent a complete request (idle keep-alive ones first), so a
  scraper that connects and asks is always served;
- a GET with a body is refused and the connection closed (its body would
  otherwise be read as the next request);
- only the exact paths of `ENDPOINTS` (a query string aside) exist: `//metrics` is 404.

Why not a library server: none of those kept in Python (http.server,
waitress, uvicorn, aiohttp) has a deadline for the whole request head or a
cap on the request bytes buffered across connections; with a thread per
connection (http.server, waitress) a few hundred slow clients take every
thread, and each of those servers would still need the rules above around
it. The part that is easy to get wrong, parsing, is h11's.
"""
from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, cast

import h11
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from kpod_agent import redact
from kpod_agent.exporter import Exposition, accepts_gzip

if TYPE_CHECKING:
    from kpod_agent.agent import Agent

log = logging.getLogger(__name__)

# Path -> what it answers (GET only); docs/reference/endpoints.md is generated from it.
ENDPOINTS = {
    "/metrics": "Prometheus exposition of every enabled collector and the agent's own metrics: text "
                "format 0.0.4, or OpenMetrics when the Accept header asks for it; gzip when "
                "Accept-Encoding allows it.",
    "/healthz": "200 `ok` while the process serves HTTP (liveness).",
    "/readyz": "200 `ready` once a config is applied and discovery has synced; 503 with the reason before.",
    "/config": "JSON status of the agent: the applied config (credentials redacted), its generation "
               "and source, the last reload result, collector states and discovery.",
    "/topology": "JSON service topology of the node: the TCP edges seen since start, each end resolved to a "
                 "pod, Service or node (else its address), with protocol, connections, bytes, RTT and drops "
                 "(docs/topology.md).",
}
# Prometheus sends ~300 bytes of head; curl ~100.
HEAD_LIMIT = 16 * 1024
MAX_HEADERS = 64
# Seconds for a whole request head, from accept (or from its first byte on
# a kept-alive connection): a client on the node sends it in one packet.
HEAD_DEADLINE = 5.0
# Seconds a kept-alive connection may wait for its next request.
IDLE_TIMEOUT = 15.0
# Seconds a client may take to accept each chunk of an answer.
WRITE_TIMEOUT = 10.0
MAX_CONNECTIONS = 512
# Seconds a new connection has to send its request before it can be
# closed to make room (the head deadline still applies).
ADMIT_GRACE = 0.2
# Connections the kernel queues before we accept them (capped by
# net.core.somaxconn): a scraper's SYN dropped from a full queue waits 1 s.
LISTEN_BACKLOG = 4096
MAX_BUFFERED = 2 * 1024 * 1024
WRITE_CHUNK = 256 * 1024
# Kernel receive buffer per connection (the kernel doubles it): requests are
# small, and a client that never completes one cannot park more there.
RECEIVE_BUFFER = 16 * 1024

MetricsSource = Callable[[str, bool], Exposition]


def _registry_source(registry: CollectorRegistry) -> MetricsSource:
    """Any registry, rendered per request by prometheus_client (tests that
    add their own collectors; the agent itself serves its exporter's cache)."""

    def render(accept: str, gzip: bool) -> Exposition:
        encoder, content_type = choose_encoder(accept)
        return Exposition((encoder(registry),), content_type)

    return render


class AgentHTTPServer:
    """Listens at once (errors surface in the constructor); serves from a
    daemon thread after `start()`."""

    def __init__(self, address: tuple[str, int], agent: Agent, registry: CollectorRegistry | None = None,
                 metrics: MetricsSource | None = None) -> None:
        if metrics is None:
            assert registry is not None, "a registry or a metrics source"
            metrics = _registry_source(registry)
        self.agent = agent
        self.metrics = metrics
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.create_server(address, family=family, backlog=LISTEN_BACKLOG)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.max_connections = MAX_CONNECTIONS
        self.max_buffered = MAX_BUFFERED
        self.head_deadline = HEAD_DEADLINE
        self.idle_timeout = IDLE_TIMEOUT
        self.connections: dict[_Connection, None] = {}  # in accept order
        self._sweeping = False
        self.buffered = 0
        # Counted for tests and the log: connections closed by each rule.
        self.connections_refused = 0
        self.evicted = 0
        self.head_timeouts = 0
        self.over_buffer = 0
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        # Renders (a stale /metrics cache, /config) run here, not in the loop.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="http-render")

    # ---- lifecycle ------------------------------------------------------

    def start(self) -> threading.Thread:
        _raise_open_files_limit(MAX_CONNECTIONS + 1024)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                self._loop.create_server(lambda: _Connection(self), sock=self.socket, backlog=LISTEN_BACKLOG))
            ready.set()
            self._loop.run_forever()
            # Stopped: answers still in progress end here, not in the void.
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

        self._thread = threading.Thread(target=run, name="http", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self._thread

    def shutdown(self) -> None:
        if self._thread is None or not self._loop.is_running():
            return

        def stop() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self.connections):
                conn.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def server_close(self) -> None:
        self.socket.close()
        if not self._loop.is_running():
            self._loop.close()

    # ---- limits (loop thread only) -----------------------------------------

    def admit(self, conn: _Connection) -> bool:
        """Room for a new connection. Past `max_connections` the oldest ones
        still waiting for their request head are closed (idle kept-alive
        ones first) — after a grace of `ADMIT_GRACE`, so that a scraper
        accepted in the same burst as a thousand hostile clients has sent
        its request (and is no longer evictable) before the sweep; past
        twice the cap, at once."""
        if len(self.connections) >= 2 * self.max_connections and not self._evict(0.0):
            self.connections_refused += 1
            self._note("refused", self.connections_refused)
            return False
        self.connections[conn] = None
        if len(self.connections) > self.max_connections and not self._sweeping:
            self._sweeping = True
            self._loop.call_later(ADMIT_GRACE, self._sweep)
        return True

    def _sweep(self) -> None:
        self._sweeping = False
        while len(self.connections) > self.max_connections and self._evict(ADMIT_GRACE):
            pass
        if len(self.connections) > self.max_connections:  # all too young or busy: look again
            self._sweeping = True
            self._loop.call_later(ADMIT_GRACE, self._sweep)

    def _evict(self, min_age: float) -> bool:
        oldest = self._loop.time() - min_age
        victim = min((c for c in self.connections if c.waiting and c.since <= oldest),
                     key=lambda c: (not c.idle, c.since), default=None)
        if victim is None:
            return False
        self.evicted += 1
        self._note("closed to make room", self.evicted)
        victim.close()
        return True

    def reserve(self, conn: _Connection, size: int) -> bool:
        """`size` more request bytes held by `conn`; False when `conn` itself
        is the one dropped to keep the total under the cap."""
        while self.buffered + size > self.max_buffered:
            victim = max((c for c in self.connections if c.held), key=lambda c: c.held, default=None)
            if victim is None or victim is conn or victim.held < conn.held + size:
                self.over_buffer += 1
                self._note("dropped over the request buffer cap", self.over_buffer)
                return False
            self.over_buffer += 1
            victim.close()
        self.buffered += size
        return True

    def forget(self, conn: _Connection) -> None:
        self.connections.pop(conn, None)

    @staticmethod
    def _note(what: str, count: int) -> None:
        # Once per order of magnitude: a flood must not flood the log too.
        if count in (1, 10, 100) or count % 1000 == 0:
            log.warning("http: %d connections %s so far (hostile or overloaded clients)", count, what)

    # ---- endpoints ---------------------------------------------------------

    def answer(self, path: str, headers: dict[str, str]) -> tuple[int, tuple[bytes, ...], str, list[tuple[str, str]]]:
        """Status, body parts, content type, extra headers of a GET (run in the pool)."""
        agent = self.agent
        if path == "/metrics":
            exposition = self.metrics(headers.get("accept", ""), accepts_gzip(headers.get("accept-encoding", "")))
            extra = [("Vary", "Accept, Accept-Encoding")]
            if exposition.content_encoding:
                extra.append(("Content-Encoding", exposition.content_encoding))
            return 200, exposition.parts, exposition.content_type, extra
        if path == "/healthz":
            return 200, (b"ok\n",), "text/plain; charset=utf-8", []
        if path == "/readyz":
            if agent.ready():
                return 200, (b"ready\n",), "text/plain; charset=utf-8", []
            reason = "no config applied" if agent.config is None else "discovery not synced"
            return 503, (f"not ready: {reason}\n".encode(),), "text/plain; charset=utf-8", []
        if path == "/topology":
            doc = agent.view.topology
            return 200, (json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n",), "application/json", []
        status = redact.redact_all(agent.status().model_dump(mode="json"))
        return 200, (json.dumps(status, indent=2, sort_keys=True).encode() + b"\n",), "application/json", []


_TEXT = "text/plain; charset=utf-8"
_NOT_FOUND = f"not found: {' '.join(ENDPOINTS)}\n".encode()


class _Connection(asyncio.Protocol):
    def __init__(self, server: AgentHTTPServer) -> None:
        self.server = server
        self.loop = server._loop
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT + 1)
        self.transport: asyncio.Transport | None = None
        self.waiting = True  # for a request head (evictable); False while answering
        self.idle = False  # kept alive, no byte of the next request yet
        self.since = self.loop.time()
        self.held = 0  # request bytes counted against the server's cap
        self.line_seen = False  # the request line is complete
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None

    # ---- asyncio callbacks --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP server's transports are always asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        if not self.server.admit(self):
            self.closed = True
            self.transport.abort()
            return
        self._arm(self.server.head_deadline)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.idle:  # first byte of the next request: its head has the deadline now
            self.idle = False
            self.since = self.loop.time()
            self._arm(self.server.head_deadline)
        if not self.line_seen and b"\n" in data:
            self.line_seen = True
        if self.held + len(data) > HEAD_LIMIT:
            self._refuse(414 if not self.line_seen else 431,
                         "request line too long" if not self.line_seen else "request head too large")
            return
        if not self.server.reserve(self, len(data)):
            self._refuse(503, "server busy")
            return
        self.held += len(data)
        self.h11.receive_data(data)
        if self.waiting:
            self._next_request()

    def eof_received(self) -> bool | None:
        if self.waiting:
            self.close()
            return None
        return True  # half-closed after its request: the answer still goes out

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._release()
        if self.timer is not None:
            self.timer.cancel()
        self.server.forget(self)
        self._writable.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ---- request handling ------------------------------------------------------

    def _next_request(self) -> None:
        try:
            event = self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            self._refuse(exc.error_status_hint if exc.error_status_hint >= 400 else 400, str(exc))
            return
        if event is h11.NEED_DATA:
            return
        if isinstance(event, h11.ConnectionClosed):
            self.close()
            return
        if not isinstance(event, h11.Request):  # cannot happen in state IDLE; be safe
            self._refuse(400, "unexpected data")
            return
        self.waiting = False
        if self.timer is not None:
            self.timer.cancel()
        assert self.transport is not None
        self.transport.pause_reading()  # one request at a time; pipelined bytes wait in the kernel
        has_body = any(name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" 0"))
                       for name, value in event.headers)
        if not has_body:
            try:
                self.h11.next_event()  # its EndOfMessage: the request is complete
            except h11.RemoteProtocolError as exc:
                self._refuse(400, str(exc))
                return
        self._task = self.loop.create_task(self._serve(event, has_body))

    async def _serve(self, request: h11.Request, has_body: bool) -> None:
        try:
            status, parts, content_type, extra, close = await self._dispatch(request, has_body)
            await self._send(request, status, parts, content_type, extra, close)
        except (ConnectionError, asyncio.CancelledError, TimeoutError):
            self.close()
            return
        except Exception:
            log.exception("http: answering %r failed", request.target[:200])
            self.close()
            return
        if self.closed:
            return
        if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is not h11.DONE:
            self._close_after_write()
            return
        self.h11.start_next_cycle()
        self._release()
        # What the client already sent of its next request is still held.
        self.held = len(self.h11.trailing_data[0])
        self.line_seen = False
        self.server.buffered += self.held
        self.waiting, self.idle, self.since = True, not self.held, self.loop.time()
        self._arm(self.server.head_deadline if self.held else self.server.idle_timeout)
        assert self.transport is not None
        self.transport.resume_reading()
        if self.held:
            self._next_request()

    async def _dispatch(
        self, request: h11.Request, has_body: bool,
    ) -> tuple[int, tuple[bytes, ...], str, list[tuple[str, str]], bool]:
        self._release()
        if len(request.headers) > MAX_HEADERS:
            return 431, (b"too many header lines\n",), _TEXT, [], True
        if request.http_version not in (b"1.0", b"1.1"):
            return 505, (b"HTTP/1.0 or HTTP/1.1 only\n",), _TEXT, [], True
        if request.method != b"GET":
            return 405, (b"" if request.method == b"HEAD" else b"method not allowed\n",), _TEXT, \
                [("Allow", "GET")], True
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers}
        if has_body:
            # A body on a GET: refused, and the connection closed, so its
            # bytes are never read as another request.
            return 400, (b"a GET request carries no body\n",), _TEXT, [], True
        path = request.target.split(b"?", 1)[0]
        if path not in (p.encode() for p in ENDPOINTS):
            return 404, (_NOT_FOUND,), _TEXT, [], False
        name = path.decode()
        if name in ("/healthz", "/readyz"):
            status, parts, content_type, extra = self.server.answer(name, headers)
        else:
            status, parts, content_type, extra = await self.loop.run_in_executor(
                self.server._pool, self.server.answer, name, headers)
        return status, parts, content_type, extra, False

    async def _send(self, request: h11.Request, status: int, parts: tuple[bytes, ...], content_type: str,
                    extra: list[tuple[str, str]], close: bool) -> None:
        assert self.transport is not None
        headers = [("Content-Type", content_type), ("Content-Length", str(sum(len(p) for p in parts))), *extra]
        if close:
            headers.append(("Connection", "close"))
        self.transport.write(self.h11.send(h11.Response(status_code=status, headers=headers)))
        for part in parts:
            view = memoryview(part)
            for start in range(0, len(view), WRITE_CHUNK):
                # h11 passes the memoryview through untouched (no copy of a large body).
                chunk = cast(bytes, view[start:start + WRITE_CHUNK])
                for data in self.h11.send_with_data_passthrough(h11.Data(data=chunk)) or ():
                    self.transport.write(data)
                # Bounded: a client that stops reading is dropped, not waited for.
                await asyncio.wait_for(self._writable.wait(), WRITE_TIMEOUT)
                if self.closed:
                    raise ConnectionResetError("client went away")
        self.transport.write(self.h11.send(h11.EndOfMessage()))

    # ---- ending ------------------------------------------------------------

    def _refuse(self, status: int, reason: str) -> None:
        """An error answer written as bytes (h11 cannot answer a request it
        never parsed), then close."""
        if self.closed or self.transport is None:
            return
        body = f"{status} {reason[:200]}\n".encode()
        phrase = {400: "Bad Request", 408: "Request Timeout", 414: "URI Too Long",
                  431: "Request Header Fields Too Large", 503: "Service Unavailable"}.get(status, "Error")
        self.transport.write(f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        self._close_after_write()

    def _timeout(self) -> None:
        if self.closed or not self.waiting:
            return
        if self.idle:
            self.close()
        else:
            self.server.head_timeouts += 1
            self._refuse(408, "request head not received in time")

    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(seconds, self._timeout)

    def _release(self) -> None:
        self.server.buffered -= self.held
        self.held = 0

    def _close_after_write(self) -> None:
        self._release()
        self.waiting = False
        # Out of the table now, not when the kernel is done with it: a burst
        # of accepts in one loop turn must find its room.
        self.server.forget(self)
        if self.transport is not None:
            self.transport.close()  # sends what is buffered, then closes
        self.closed = True

    def close(self) -> None:
        self._release()
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True
        self.server.forget(self)


def _raise_open_files_limit(wanted: int) -> None:
    """One descriptor per connection: a soft limit of 1024 would end the
    accepting before the connection cap does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass

