"""The OTLP push: one view's families as the SDK's MetricsData, encoded by the
SDK's OTLP exporter, read back as the samples /metrics shows for that view;
the `otlp` config section, its reload plan and its headers file."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from kpod_agent import otlp
from kpod_agent.collectors.base import Hist, MetricSpec, Snapshot
from kpod_agent.config import ConfigError, config_from_dict, parse_config
from kpod_agent.exporter import KpodCollector
from kpod_agent.pods import CgroupEntry, ContainerInfo, PodIndex, PodInfo
from kpod_agent.reload import plan_reload
from kpod_agent.view import CollectionView, CollectorView
from tests.support.otlp_receiver import OtlpReceiver, as_samples, resource_attributes, scrape_samples

KEY = "k3y-Secret-123"


@dataclasses.dataclass
class Source:
    view: CollectionView


def _view(cluster: str = "") -> CollectionView:
    pod = PodInfo("u1", "ns", "p", {"app": "web"}, None, (ContainerInfo("app", "containerd", "c", 2),))
    entries = {2: CgroupEntry(2, "p/c", "ns", "p", "app", "u1")}
    index = PodIndex(entries=entries, pods={"u1": pod}, pod_paths={"u1": "p"})
    count = MetricSpec("kpod_syscall_count_total", "calls", "counter", labels=("syscall",), map="s")
    latency = MetricSpec("kpod_syscall_latency_seconds", "latency", "histogram", labels=("syscall",), map="s",
                         unit_seconds=1e-9)
    snap = Snapshot()
    snap.add(count.name, 2, 7.0, ("getppid",))
    snap.add(latency.name, 2, Hist((0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2),
                                   5_000_000.0), ("getppid",))
    config = config_from_dict({"discovery": {"mode": "kubelet"}, "clusterName": cluster,
                               "collectors": {"syscall": {"enabled": True}}})
    collector = CollectorView("syscall", (count, latency), True, snap, allowed={2: 0}, resolved={})
    return CollectionView("node-1", config, index, {"syscall": {2: 0}}, {"syscall": collector},
                          otlp_exports={"success": 4, "error": 1})


@pytest.mark.parametrize("cluster", ["", "prod"])
def test_one_view_pushed_is_what_a_scrape_of_it_shows(cluster: str) -> None:
    view = _view(cluster)
    request = encode_metrics(otlp.metrics_data(view, start_ns=1))
    scraped = scrape_samples(KpodCollector(Source(view)).render_text().decode())
    assert as_samples(request) == scraped
    labels = frozenset({"namespace": "ns", "pod": "p", "container": "app", "node": "node-1", "syscall": "getppid",
                        **({"cluster": cluster} if cluster else {})}.items())
    assert scraped[("kpod_syscall_count_total", labels)] == 7.0
    assert scraped[("kpod_syscall_latency_seconds_count", labels)] == 6.0
    assert scraped[("kpod_otlp_exports_total", frozenset({"result": "error", **(
        {"cluster": cluster} if cluster else {})}.items()))] == 1.0
    expected = {"service.name": "kpod-agent", "host.name": "node-1", **({"cluster": cluster} if cluster else {})}
    assert expected.items() <= resource_attributes(request).items()


def test_a_collector_attached_later_starts_its_series_then() -> None:
    """A collector attached again counts from zero: its series' start time
    says so (OTLP's reset signal); the agent's own series keep the agent's."""
    view = _view()
    for attached, expected in ((0, 100), (50, 100), (5_000, 5_000)):
        collector = dataclasses.replace(view.collectors["syscall"], attached_ns=attached)
        data = otlp.metrics_data(dataclasses.replace(view, collectors={"syscall": collector}), start_ns=100,
                                 now_ns=9_000)
        metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
        for name in ("kpod_syscall_count", "kpod_syscall_latency_seconds"):
            assert {p.start_time_unix_nano for p in metrics[name].data.data_points} == {expected}, name
        assert {p.start_time_unix_nano for p in metrics["kpod_otlp_exports"].data.data_points} == {100}


def test_families_convert_by_type_with_their_bounds() -> None:
    counter = CounterMetricFamily("c", "a counter", labels=["x"])
    counter.add_metric(["1"], 5.0)
    gauge = GaugeMetricFamily("g", "a gauge")
    gauge.add_metric([], 2.5)
    hist = HistogramMetricFamily("h", "a histogram", labels=["x"])
    hist.add_metric(["1"], [("0.5", 1.0), ("2.0", 4.0), ("+Inf", 6.0)], 9.0)
    c, g, h = (otlp.to_metric(f, 10, 20) for f in (counter, gauge, hist))
    assert c is not None and c.name == "c" and c.data.is_monotonic  # type: ignore[union-attr]
    assert [p.value for p in c.data.data_points] == [5.0]
    assert g is not None and type(g.data).__name__ == "Gauge" and g.data.data_points[0].value == 2.5
    assert h is not None
    (point,) = h.data.data_points
    assert list(point.explicit_bounds) == [0.5, 2.0] and list(point.bucket_counts) == [1, 3, 2]
    assert (point.count, point.sum, point.start_time_unix_nano, point.time_unix_nano) == (6, 9.0, 10, 20)
    assert otlp.to_metric(GaugeMetricFamily("empty", "no series", labels=["x"]), 1, 2) is None


def test_config_section_is_checked_and_names_the_field() -> None:
    assert parse_config("otlp: {enabled: true, endpoint: 'http://c:4318'}").otlp.url() == "http://c:4318/v1/metrics"
    assert parse_config("otlp: {enabled: true, endpoint: 'https://c/x/y'}").otlp.url() == "https://c/x/y"
    assert parse_config("{}").otlp.enabled is False
    with pytest.raises(ConfigError, match="otlp: .*endpoint is required"):
        parse_config("otlp: {enabled: true}")
    with pytest.raises(ConfigError, match="otlp.endpoint: .*http:// or https://"):
        parse_config("otlp: {endpoint: 'ftp://c'}")
    with pytest.raises(ConfigError, match="otlp.interval"):
        parse_config("otlp: {interval: 1ms}")
    with pytest.raises(ConfigError, match="otlp.headers: unknown field"):
        parse_config("otlp: {headers: {x-api-key: clear}}")  # only ever from a file


def test_otlp_changes_restart_only_the_pusher() -> None:
    base = "profile: custom\ncollectors: {syscall: {}}\n"
    off = parse_config(base)
    on = parse_config(base + "otlp: {enabled: true, endpoint: 'http://a:4318'}")
    moved = parse_config(base + "otlp: {enabled: true, endpoint: 'http://b:4318'}")
    slower = parse_config(base + "otlp: {enabled: true, endpoint: 'http://b:4318', interval: 2m}")
    for old, new in ((off, on), (on, moved), (moved, slower), (slower, off)):
        plan = plan_reload(old, new)
        assert plan.restart_otlp and plan.attach == plan.detach == plan.reconfigure == ()
        assert not plan.restart_discovery
    assert not plan_reload(on, parse_config(base + "otlp: {enabled: true, endpoint: 'http://a:4318'}\n"
                                            "generation: 3")).restart_otlp
    assert plan_reload(None, off).restart_otlp


def test_headers_file_formats(tmp_path: Path) -> None:
    path = tmp_path / "headers"
    path.write_text(f"x-api-key={KEY}\nx-tenant = team-a , x-other=1\n")
    assert otlp.read_headers(str(path)) == {"x-api-key": KEY, "x-tenant": "team-a", "x-other": "1"}
    assert otlp.read_headers("") == {}
    path.write_text("Authorization=Basic%20dXNlcg==\n")  # URL-encoded values, as OTEL_EXPORTER_OTLP_HEADERS
    assert otlp.read_headers(str(path)) == {"authorization": "Basic dXNlcg=="}


def test_a_malformed_headers_entry_is_ignored_and_not_logged(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "headers"
    path.write_text(f"x-api-key: {KEY}\nx-ok=1\n")  # a colon, not '=': the whole line is the secret
    with caplog.at_level(logging.DEBUG):
        assert otlp.read_headers(str(path)) == {"x-ok": "1"}
    assert "1 entries are not name=value" in caplog.text and KEY not in caplog.text


def test_push_counts_results_and_never_logs_headers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    headers = tmp_path / "headers"
    headers.write_text(f"x-api-key={KEY}\n")
    results: list[str] = []
    view = _view()
    with OtlpReceiver() as receiver:
        conf = parse_config(f"otlp: {{enabled: true, endpoint: '{receiver.url}', headersFile: '{headers}', "
                            "interval: 1s}").otlp
        pusher = otlp.OtlpPusher(conf, lambda: view, results.append, start_ns=1)
        with caplog.at_level(logging.DEBUG):
            assert pusher.push_once()
            got = receiver.last()
            assert got.path == "/v1/metrics" and got.headers["x-api-key"] == KEY
            assert got.headers["content-type"] == "application/x-protobuf"
            receiver.status = 401  # a refused key: counted, logged without it
            assert not pusher.push_once()
            receiver.status = 503
            assert not pusher.push_once()
        url = receiver.url
    with caplog.at_level(logging.DEBUG):
        assert not pusher.push_once()  # nobody listens any more
        headers.unlink()
        assert not pusher.push_once()  # headers file gone: skipped, counted
    assert results == ["success", "error", "error", "error", "error"]
    assert KEY not in caplog.text and url in caplog.text
    assert f"cannot read {headers}" in caplog.text
