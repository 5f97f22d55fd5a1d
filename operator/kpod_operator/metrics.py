"""The operator's own /metrics (prometheus_client, a registry per operator)."""
from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kpod_agent import runtime_info

# Reconcile outcome reason -> result label (a small, fixed set).
RESULTS = {"Reconciled": "success", "ServiceMonitorCRDNotInstalled": "success",
           "InvalidSpec": "invalid_spec", "ApplyFailed": "apply_failed", "Conflict": "conflict"}


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconciles = Counter("kpod_operator_reconciles", "Fleet reconciles by result.", ["result"], registry=r)
        for result in ("success", "invalid_spec", "apply_failed", "conflict", "no_fleet", "error"):
            self.reconciles.labels(result)
        self.duration = Histogram("kpod_operator_reconcile_duration_seconds", "Duration of fleet reconciles.",
                                  buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.api_errors = Counter("kpod_operator_api_errors", "Failed API requests by verb and HTTP code "
                                  "(0: no answer).", ["verb", "code"], registry=r)
        self.queue_depth = Gauge("kpod_operator_queue_depth", "Reconciles and status refreshes running or "
                                 "waiting to run.", registry=r)
        self.fleets = Gauge("kpod_operator_fleet_profiles", "Active fleet profiles (0 or 1).", registry=r)
        self.overrides = Gauge("kpod_operator_namespace_overrides", "Valid namespace overrides merged.",
                               registry=r)
        self.nodes_applied = Gauge("kpod_operator_nodes_applied", "Agents running the current config generation.",
                                   registry=r)
        self.nodes_desired = Gauge("kpod_operator_nodes_desired", "Nodes the agent DaemonSet should run on.",
                                   registry=r)
        self.leader = Gauge("kpod_operator_leader", "1 while this process holds the leader Lease.", registry=r)
        info = runtime_info.build_info()
        Gauge("kpod_build_info", "Build information (value 1).", list(info), registry=r).labels(**info).set(1)

    def api_error(self, verb: str, code: int) -> None:
        self.api_errors.labels(verb, str(code)).inc()

    def set_leader(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    def track_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    @contextmanager
    def reconcile(self) -> Iterator[dict[str, str]]:
        """Times a reconcile; the caller puts the result in the yielded dict."""
        outcome = {"result": "error"}
        start = time.perf_counter()
        try:
            yield outcome
        finally:
            self.duration.observe(time.perf_counter() - start)
            self.reconciles.labels(outcome["result"]).inc()

    def observe_status(self, status: dict[str, Any]) -> None:
        applied, _, desired = str(status.get("nodesApplied") or "").partition("/")
        self.nodes_desired.set(float(status.get("desiredNumberScheduled") or 0))
        if applied.isdigit():
            self.nodes_applied.set(float(applied))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve(metrics: OperatorMetrics, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """/metrics and /healthz on host:port, in a daemon thread (standbys serve too)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, ctype, code = metrics.render(), CONTENT_TYPE_LATEST, 200
            elif path in ("/healthz", "/readyz"):
                body, ctype, code = b"ok\n", "text/plain", 200
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="kpod-operator-metrics", daemon=True).start()
    return server
