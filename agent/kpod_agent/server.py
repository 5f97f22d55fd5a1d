"""The agent's HTTP endpoints: /metrics, /healthz, /readyz, /config. Nothing else.

A plain ThreadingHTTPServer: four read-only endpoints do not justify a web
framework, and prometheus_client's own server would not serve the others.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:
    from kpod_agent.agent import Agent

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    server: "AgentHTTPServer"
    protocol_version = "HTTP/1.1"
    # Slow or silent clients must not pin a thread forever.
    timeout = 10
    # The error answer to an unparsable request line then has a status line
    # (the default, HTTP/0.9, sends a bare HTML body that clients cannot read).
    default_request_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        agent = self.server.agent
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            if content_type == CONTENT_TYPE_LATEST and self.server.fast_text is not None:
                body = self.server.fast_text()
            else:
                body = encoder(self.server.registry)
            self._send(200, body, content_type)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            if agent.ready():
                self._send(200, b"ready\n", "text/plain; charset=utf-8")
            else:
                reason = "no config applied" if agent.config is None else "discovery not synced"
                self._send(503, f"not ready: {reason}\n".encode(), "text/plain; charset=utf-8")
        elif path == "/config":
            body = json.dumps(agent.status(), indent=2, sort_keys=True).encode() + b"\n"
            self._send(200, body, "application/json")
        else:
            self._send(404, b"not found: /metrics /healthz /readyz /config\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(405, b"", "text/plain")

    def _other(self) -> None:
        self._send(405, b"method not allowed\n", "text/plain; charset=utf-8")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _other  # noqa: N815

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if code == 405:
                self.send_header("Allow", "GET")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("http %s - %s", self.address_string(), format % args)


class AgentHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops SYNs in a burst of
    # connections (scrapers, clients that stall), and each dropped client
    # waits a 1 s retransmit, 8 s in all for 64 connections.
    request_queue_size = 128
    # One thread (~30 KB) per open connection: without a cap, a few thousand
    # idle connections push the agent past its memory limit. Past the cap a
    # connection is closed at once; stalled ones free their slot on timeout.
    max_connections = 256

    def __init__(self, address: tuple[str, int], agent: "Agent", registry: CollectorRegistry,
                 fast_text: Callable[[], bytes] | None = None) -> None:
        super().__init__(address, _Handler)
        self.agent = agent
        self.registry = registry
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self.connections_refused = 0
        # The text format for Prometheus, rendered without sample objects.
        self.fast_text = fast_text

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.connections_refused += 1
            if self.connections_refused in (1, 10, 100) or self.connections_refused % 1000 == 0:
                log.warning("http: %d connections open, refused %d so far", self.max_connections,
                            self.connections_refused)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:  # no thread started: its slot is still ours
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr for every client that hung
        # up mid-answer (routine: timeouts, refused huge requests); log those
        # quietly and anything else once, in the agent's log.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("http client %s went away: %s", client_address[0], exc)
            return
        log.exception("http request from %s failed", client_address[0])

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread
