"""/metrics at node scale: the exporter's own text and OpenMetrics writers
equal prometheus_client's byte for byte, and the cache serves the same bytes
(plain or gzip) to every scraper until the next collection."""
from __future__ import annotations

import gzip

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_families

from kpod_agent.exporter import KpodCollector, accepts_gzip, wants_openmetrics
from tests.support.fake_pods import fake_agent

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
# Every kind: counters with and without extra labels, a gauge, histograms.
FILLED = ("kpod_cpu_context_switches_total", "kpod_mem_rss_bytes", "kpod_syscall_count_total",
          "kpod_syscall_errors_total", "kpod_syscall_latency_seconds", "kpod_cpu_runqueue_latency_seconds")


@pytest.fixture()
def exporter() -> KpodCollector:
    return KpodCollector(fake_agent(30, filled=FILLED))


def _parsed(text: bytes, parser) -> tuple[set, set]:  # type: ignore[no-untyped-def]
    """(family name, type, help) and (sample name, labels, value) sets: the
    library sorts label names in its output, the exporter keeps them in order."""
    families, samples = set(), set()
    for family in parser(text.decode()):
        families.add((family.name, family.type, family.documentation))
        for sample in family.samples:
            samples.add((sample.name, tuple(sorted(sample.labels.items())), sample.value))
    return families, samples


def test_own_writers_equal_the_library(exporter: KpodCollector) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    ours = _parsed(exporter.render_text(), text_families)
    assert ours == _parsed(generate_latest(registry), text_families)
    assert len(ours[1]) > 30 * 3 * 10
    om = exporter.render_text(openmetrics=True)
    assert om.endswith(b"\n# EOF\n")
    families, samples = _parsed(om, text_string_to_metric_families)
    assert (families, samples) == _parsed(openmetrics_latest(registry), text_string_to_metric_families)
    assert ("kpod_cpu_context_switches", "counter", "Times a task of the cgroup was switched out of a CPU.") \
        in families
    assert len([s for s in samples if s[0] == "kpod_syscall_latency_seconds_bucket"]) >= 30 * 3 * 2


def test_every_scraper_gets_the_same_bytes_until_the_next_cycle(exporter: KpodCollector) -> None:
    first = exporter.exposition(PROMETHEUS_ACCEPT)
    again = exporter.exposition(PROMETHEUS_ACCEPT)
    assert first.content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert all(a is b for a, b in zip(first.parts, again.parts, strict=True)), "rendered twice"
    assert first.body() == exporter.render_text(openmetrics=True)
    text = exporter.exposition("")
    assert text.content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert text.body() == exporter.render_text()

    exporter.source.collect_due(force=True)  # new snapshots: new bytes
    after = exporter.exposition(PROMETHEUS_ACCEPT)
    assert after.parts[0] is not first.parts[0]
    assert after.body() == exporter.render_text(openmetrics=True) != first.body()


def test_gzip_is_the_same_document(exporter: KpodCollector) -> None:
    zipped = exporter.exposition(PROMETHEUS_ACCEPT, gzip=True)
    assert zipped.content_encoding == "gzip"
    assert gzip.decompress(zipped.body()) == exporter.exposition(PROMETHEUS_ACCEPT).body()
    # Only the self metrics change (a rejected config): the compressed head is
    # reused, the stream is still one valid gzip member.
    exporter.source.reject("test: a bad document")
    again = exporter.exposition(PROMETHEUS_ACCEPT, gzip=True)
    assert again.parts[0] is zipped.parts[0] and again.parts[1] != zipped.parts[1]
    plain = gzip.decompress(again.body())
    assert plain == exporter.render_text(openmetrics=True)
    assert b'kpod_config_reloads_total{result="error"} 1.0' in plain


@pytest.mark.parametrize("accept,openmetrics", [
    (PROMETHEUS_ACCEPT, True),
    ("application/openmetrics-text; version=1.0.0; charset=utf-8", True),
    ("text/plain;version=0.0.4", False),
    ("", False),
    ("*/*", False),
    ("application/openmetrics-text;q=0,text/plain", False),
])
def test_format_follows_accept(accept: str, openmetrics: bool) -> None:
    assert wants_openmetrics(accept) is openmetrics


@pytest.mark.parametrize("header,wanted", [
    ("gzip", True), ("gzip, deflate, br", True), ("deflate;q=1, gzip;q=0.5", True),
    ("gzip;q=0", False), ("identity", False), ("", False),
])
def test_gzip_follows_accept_encoding(header: str, wanted: bool) -> None:
    assert accepts_gzip(header) is wanted


def test_with_a_collection_loop_scrapers_never_render_the_pod_series(exporter: KpodCollector) -> None:
    agent = exporter.source
    exporter.exposition(PROMETHEUS_ACCEPT, gzip=True)
    exporter.prewarm()  # as the collection loop does after each cycle
    served = exporter.exposition(PROMETHEUS_ACCEPT, gzip=True)
    agent.collect_due(force=True)
    # Between the cycle and its prewarm: the last rendered per-pod part...
    stale = exporter.exposition(PROMETHEUS_ACCEPT, gzip=True)
    assert stale.parts[0] is served.parts[0]
    # ...but self metrics as they are now.
    agent.reject("test: a bad document")
    now = gzip.decompress(exporter.exposition(PROMETHEUS_ACCEPT, gzip=True).body())
    assert b'kpod_config_reloads_total{result="error"} 1.0' in now
    exporter.prewarm()
    fresh = exporter.exposition(PROMETHEUS_ACCEPT, gzip=True)
    assert fresh.parts[0] is not served.parts[0]
    assert gzip.decompress(fresh.body()) == exporter.render_text(openmetrics=True)


def test_a_new_pod_list_is_never_served_stale(exporter: KpodCollector) -> None:
    agent = exporter.source
    exporter.exposition(PROMETHEUS_ACCEPT)
    exporter.prewarm()
    assert b'pod="pod-29"' in exporter.exposition(PROMETHEUS_ACCEPT).body()
    gone = next(uid for uid, pod in agent.index.pods.items() if pod.name == "pod-29")
    agent.on_index(type(agent.index)(entries={k: e for k, e in agent.index.entries.items() if e.pod_uid != gone},
                                     pods={u: p for u, p in agent.index.pods.items() if u != gone}))
    assert b'pod="pod-29"' not in exporter.exposition(PROMETHEUS_ACCEPT).body()
