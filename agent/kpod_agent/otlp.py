"""OTLP/HTTP push of the series /metrics serves (node config ``otlp``).

OpenTelemetry's instruments aggregate observations themselves and cannot
take the agent's already cumulative counters and histograms, so the metric
families the exporter renders from ONE published view are converted into the
SDK's ``MetricsData`` (counters: cumulative monotonic sums; gauges; histograms
with our bucket bounds as explicit bounds) and handed to the SDK's
``OTLPMetricExporter``, which encodes the protobuf and sends it. A background
thread pushes every ``interval``; a failed push is counted and logged, never
with the headers, and never blocks scraping or collection.
"""
from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.core import Metric as PromMetric

from kpod_agent.config import OtlpConfig
from kpod_agent.exporter import KpodCollector
from kpod_agent.reload import ConfigFileError, read_regular_file
from kpod_agent.version import version
from kpod_agent.view import CollectionView

log = logging.getLogger(__name__)

SERVICE_NAME = "kpod-agent"
MAX_HEADERS_BYTES = 64 * 1024
# An HTTP header name (RFC 9110 token).
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+$")
# A push never waits longer than this for the receiver, whatever the interval.
MAX_TIMEOUT_SECONDS = 10.0
# https endpoints: the host's CA bundle where there is one (Debian's path);
# else requests' own (certifi, the Mozilla bundle), which the image carries.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def resource_of(view: CollectionView) -> Resource:
    attributes: dict[str, str] = {"service.name": SERVICE_NAME, "service.version": version(),
                                  "host.name": view.node_name}
    if view.config is not None and view.config.clusterName:
        attributes["cluster"] = view.config.clusterName
    return Resource.create(attributes)


def _attributes(labels: Mapping[str, str], skip: str = "") -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != skip}


def _histogram_points(family: PromMetric, start_ns: int, now_ns: int) -> list[HistogramDataPoint]:
    """Prometheus buckets are cumulative per `le`; OTLP's are counts per
    bucket, with the finite `le`s as explicit bounds."""
    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for sample in family.samples:
        key = tuple(sorted(_attributes(sample.labels, "le").items()))
        entry = series.setdefault(key, {"buckets": [], "count": 0.0, "sum": 0.0})
        if sample.name.endswith("_bucket"):
            entry["buckets"].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_count"):
            entry["count"] = sample.value
        elif sample.name.endswith("_sum"):
            entry["sum"] = sample.value
    points = []
    for key, entry in series.items():
        buckets = sorted(entry["buckets"])
        bounds = [le for le, _ in buckets if not math.isinf(le)]
        counts, below = [], 0.0
        for _, cumulative in buckets:
            counts.append(int(cumulative - below))
            below = cumulative
        if not buckets or not math.isinf(buckets[-1][0]):
            counts.append(int(entry["count"] - below))
        points.append(HistogramDataPoint(
            attributes=dict(key), start_time_unix_nano=start_ns, time_unix_nano=now_ns,
            count=int(entry["count"]), sum=entry["sum"], bucket_counts=counts, explicit_bounds=bounds,
            min=None, max=None))  # type: ignore[arg-type]  # unknown: left out of the message
    return points


def to_metric(family: PromMetric, start_ns: int, now_ns: int) -> Metric | None:
    """One prometheus_client family -> one OTLP metric (None: no series).
    Counters keep the family name without `_total`, as OTLP names them
    (a Prometheus receiver adds it back)."""
    if not family.samples:
        return None
    data: Sum | Gauge | Histogram
    if family.type == "histogram":
        data = Histogram(data_points=_histogram_points(family, start_ns, now_ns),
                         aggregation_temporality=AggregationTemporality.CUMULATIVE)
    else:
        points = [NumberDataPoint(attributes=_attributes(s.labels), start_time_unix_nano=start_ns,
                                  time_unix_nano=now_ns, value=s.value)
                  for s in family.samples if not s.name.endswith("_created")]
        if family.type == "counter":
            data = Sum(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE,
                       is_monotonic=True)
        else:
            data = Gauge(data_points=points)
    return Metric(name=family.name, description=family.documentation, unit="", data=data)


class _Fixed:
    """One view, held still: every family of a push comes from it."""

    def __init__(self, view: CollectionView) -> None:
        self.view = view


def families_of(view: CollectionView) -> Iterable[PromMetric]:
    """The families /metrics serves, all rendered from this one view."""
    return KpodCollector(_Fixed(view)).collect()


def start_times(view: CollectionView, start_ns: int) -> dict[str, int]:
    """Family name -> when its cumulative series began: the attach of the
    collector serving it when that is later than ``start_ns`` (a collector
    attached again starts from zero, and OTLP tells a reset by its start time)."""
    starts: dict[str, int] = {}
    for collector in view.collectors.values():
        for spec in collector.specs:
            # prometheus_client names a counter family without `_total`
            name = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
            starts[name] = max(starts.get(name, start_ns), collector.attached_ns)
    return starts


def metrics_data(view: CollectionView, start_ns: int, now_ns: int | None = None) -> MetricsData:
    """The series of one view as the SDK's MetricsData (cumulative since
    `start_ns`, or since their collector's last attach)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    starts = start_times(view, start_ns)
    metrics = [m for m in (to_metric(f, starts.get(f.name, start_ns), now_ns) for f in families_of(view))
               if m is not None]
    scope = InstrumentationScope(name="kpod_agent", version=version())
    return MetricsData(resource_metrics=[ResourceMetrics(
        resource=resource_of(view), scope_metrics=[ScopeMetrics(scope=scope, metrics=metrics, schema_url="")],
        schema_url="")])


def read_headers(path: str) -> dict[str, str]:
    """name=value pairs, separated by commas or lines (OTEL_EXPORTER_OTLP_HEADERS' format).
    Read at every push: a rotated Secret applies without a restart."""
    if not path:
        return {}
    text = read_regular_file(path, MAX_HEADERS_BYTES).decode("utf-8", "replace")
    # Parsed here, not by the SDK's parse_env_headers: that one logs a
    # malformed entry, and an entry of this file is a secret.
    headers: dict[str, str] = {}
    bad = 0
    for entry in (e.strip() for line in text.splitlines() for e in line.split(",")):
        name, eq, value = entry.partition("=")
        name = name.strip().lower()
        if not entry:
            continue
        if not eq or not _TOKEN.match(name):
            bad += 1
            continue
        headers[name] = urllib.parse.unquote(value.strip())
    if bad:
        log.warning("OTLP headers file %s: %d entries are not name=value and are ignored", path, bad)
    return headers


class OtlpPusher:
    """Pushes `source()`'s latest view every `config.interval` from its own thread."""

    def __init__(self, config: OtlpConfig, source: Callable[[], CollectionView],
                 count: Callable[[str], None], start_ns: int | None = None) -> None:
        self.config = config
        self.source = source
        self.count = count
        # Cumulative series start when the agent did (counters start at zero then).
        self.start_ns = time.time_ns() if start_ns is None else start_ns
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otlp-push", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # Short: a reload never waits out a push in flight (its result is
            # still counted; the thread ends after it).
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.config.interval):
            self.push_once()

    def push_once(self) -> bool:
        """One push of the latest view; counted, never raising."""
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        url = self.config.url()
        try:
            headers = read_headers(self.config.headersFile)
        except ConfigFileError as exc:  # names the file, never its content
            log.error("OTLP push to %s skipped: headers: %s", url, exc)
            self.count("error")
            return False
        timeout = min(self.config.interval, MAX_TIMEOUT_SECONDS)
        try:
            data = metrics_data(self.source(), self.start_ns)
            ca = SYSTEM_CA_BUNDLE if os.path.isfile(SYSTEM_CA_BUNDLE) else None
            exporter = OTLPMetricExporter(endpoint=url, headers=headers, timeout=timeout, certificate_file=ca)
            try:
                result = exporter.export(data, timeout_millis=timeout * 1000)
            finally:
                exporter.shutdown()
        except Exception as exc:  # a push must never take the agent down
            log.error("OTLP push to %s failed: %s", url, type(exc).__name__)
            self.count("error")
            return False
        ok = result == MetricExportResult.SUCCESS
        if not ok:
            log.warning("OTLP push to %s failed (see the exporter's message above)", url)
        self.count("success" if ok else "error")
        return ok

