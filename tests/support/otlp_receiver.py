"""A local OTLP/HTTP metrics receiver: decodes each request with the
OpenTelemetry protobuf definitions, and reads it back as the Prometheus
samples a scrape of the same moment shows."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Received:
    request: ExportMetricsServiceRequest
    headers: dict[str, str]
    path: str


def _attrs(kvs: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}


def resource_attributes(request: ExportMetricsServiceRequest) -> dict[str, str]:
    (rm,) = request.resource_metrics
    return _attrs(rm.resource.attributes)


def as_samples(request: ExportMetricsServiceRequest) -> Samples:
    """The request's series named as Prometheus names them (counters with
    _total; histograms as cumulative _bucket{le}, _count, _sum). Refuses
    anything but cumulative temporality."""
    out: Samples = {}
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind == "sum":
                    assert m.sum.is_monotonic, m.name
                    assert m.sum.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
                    for p in m.sum.data_points:
                        out[(m.name + "_total", frozenset(_attrs(p.attributes).items()))] = p.as_double
                elif kind == "gauge":
                    for p in m.gauge.data_points:
                        out[(m.name, frozenset(_attrs(p.attributes).items()))] = p.as_double
                elif kind == "histogram":
                    temporality = m.histogram.aggregation_temporality
                    assert temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
                    for p in m.histogram.data_points:
                        labels = _attrs(p.attributes)
                        assert len(p.bucket_counts) == len(p.explicit_bounds) + 1, m.name
                        running = 0
                        les = [floatToGoString(b) for b in p.explicit_bounds] + ["+Inf"]
                        for le, n in zip(les, p.bucket_counts, strict=True):
                            running += n
                            out[(m.name + "_bucket", frozenset({**labels, "le": le}.items()))] = float(running)
                        out[(m.name + "_count", frozenset(labels.items()))] = float(p.count)
                        out[(m.name + "_sum", frozenset(labels.items()))] = p.sum
                else:
                    raise AssertionError(f"{m.name}: unexpected data {kind}")
    return out


def scrape_samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@dataclass
class OtlpReceiver:
    """A plain http.server on 127.0.0.1 answering `status` to POST /v1/metrics."""

    status: int = 200
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                if receiver.status == 200:
                    receiver.received.append(Received(request, {k.lower(): v for k, v in self.headers.items()},
                                                      self.path))
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def last(self) -> Received:
        return self.received[-1]

    def __iter__(self) -> Iterator[Received]:
        return iter(list(self.received))
