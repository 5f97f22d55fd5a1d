"""Prometheus exposition: the agent's latest `CollectionView` -> metric families.

A custom prometheus_client collector that reads nothing but the frozen view
the agent publishes (view.py): collector snapshots resolved to pods with the
pod index of the same view, so series of deleted pods disappear with the
index entry. Series whose labels collide (several cgroups of one container)
are summed.
"""
from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.registry import Collector as PromCollector
from prometheus_client.utils import floatToGoString

from kpod_agent import filters, runtime_info, topology
from kpod_agent import labels as constant_labels
from kpod_agent.collectors.base import Hist, MetricSpec, add_into
from kpod_agent.contract import label_name
from kpod_agent.histograms import log2_to_buckets
from kpod_agent.pods import CgroupEntry
from kpod_agent.view import CollectionView

POD_LABELS = ("namespace", "pod", "container", "node")


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# A format nobody asked for in this long is no longer rendered ahead.
WANTED_SECONDS = 600.0
# Level 1 compresses metric text 8-10x at a quarter of level 6's time.
GZIP_LEVEL = 1


def wants_openmetrics(accept: str) -> bool:
    """Prometheus lists OpenMetrics first in its Accept header; a client that
    names it (with a non-zero q) gets it, anyone else text 0.0.4."""
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        if media == "application/openmetrics-text":
            return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
    return False


def accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, *params = (p.strip().lower() for p in item.split(";"))
        if coding == "gzip":
            return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
    return False


@dataclass(frozen=True)
class Exposition:
    """A /metrics answer as parts sent one after the other (never joined:
    megabytes shared by every scraper, not copied per scraper)."""
    parts: tuple[bytes, ...]
    content_type: str
    content_encoding: str | None = None

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def body(self) -> bytes:
        return b"".join(self.parts)


def _same(a: tuple[object, ...] | None, b: tuple[object, ...]) -> bool:
    """Inputs are compared by identity (a new snapshot, index or config is a
    new object; comparing 15,000 entries would cost what rendering saves),
    counters by value."""
    return a is not None and len(a) == len(b) and all(
        x is y or (type(x) is int and x == y) for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class _Rendered:
    """One format at one moment: the big head (per-pod series), the small
    tail (self metrics), and their gzip form once asked for. Never changed
    in place: a scraper holding one keeps consistent bytes."""
    head_key: tuple[object, ...]
    head: tuple[bytes, ...]
    tail_key: tuple[object, ...]
    tail: bytes
    # The compressor after the head, kept so that a new tail costs a few
    # lines of compression, not the whole document again.
    gz_state: zlib._Compress | None = None
    gz_head: bytes = b""
    gz_tail: bytes | None = None

    def with_gzip(self) -> _Rendered:
        if self.gz_tail is not None:
            return self
        gz_state, gz_head = self.gz_state, self.gz_head
        if gz_state is None:
            # wbits 31: one gzip member.
            gz_state = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
            gz_head = b"".join(gz_state.compress(part) for part in self.head)
        tail_state = gz_state.copy()
        return _Rendered(self.head_key, self.head, self.tail_key, self.tail, gz_state, gz_head,
                         tail_state.compress(self.tail) + tail_state.flush())


class ExpositionCache:
    """Renders /metrics once per change of its inputs and serves the same
    bytes to every scraper (20 parallel scrapers of 15,000 cgroups each
    rendering for themselves: 16 s per scrape and +300 MB).

    The per-pod part (megabytes, ~1 s to render at 15,000 cgroups) is
    rendered by the collection loop's `prewarm()` after each cycle: a
    scraper gets the last one rendered and does not wait for new readings
    (at most one cycle old, as if it had come a moment earlier). The self metrics (a
    few dozen lines) are rendered fresh when they changed. Without a
    collection loop (tests), a stale cache is rendered by the first scraper
    that finds it, once, the others waiting for it."""

    def __init__(self, head_key: Callable[[], tuple[object, ...]], tail_key: Callable[[], tuple[object, ...]],
                 head: Callable[[bool], tuple[bytes, ...]], tail: Callable[[bool], bytes], frame: int = 0) -> None:
        self._head_key, self._tail_key, self._render_head, self._render_tail = head_key, tail_key, head, tail
        # The first `frame` inputs of head_key must be current to serve a head
        # rendered before the latest collection.
        self._frame = frame
        self._render_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._formats: dict[bool, _Rendered] = {}  # replaced whole, read without a lock
        # Formats whose per-pod part the collection loop keeps fresh.
        self._warm: frozenset[bool] = frozenset()
        # What scrapers asked for, and when: rendered ahead of them after
        # each cycle while they keep asking (a one-off curl stops costing
        # renders after WANTED_SECONDS).
        self._wanted: dict[tuple[bool, bool], float] = {}

    def get(self, openmetrics: bool, gzip: bool) -> Exposition:
        self._wanted[(openmetrics, gzip)] = time.monotonic()
        seen = rendered = self._formats.get(openmetrics)
        if (rendered is not None and openmetrics in self._warm and (not gzip or rendered.gz_state is not None)
                and _same(rendered.head_key[:self._frame], self._head_key()[:self._frame])):
            # New readings are the collection loop's to render (it does,
            # right after each cycle); a new pod list or config is not
            # waited for (deleted pods vanish at once, as /config says);
            # the self metrics are ours, always fresh.
            tail_key = self._tail_key()
            if not _same(rendered.tail_key, tail_key):
                rendered = _Rendered(rendered.head_key, rendered.head, tail_key, self._render_tail(openmetrics),
                                     rendered.gz_state, rendered.gz_head)
            if gzip:
                rendered = rendered.with_gzip()
            if rendered is not seen:
                with self._swap_lock:  # never over a newer one the collection loop put meanwhile
                    if self._formats.get(openmetrics) is seen:
                        self._formats[openmetrics] = rendered
            return self._answer(rendered, openmetrics, gzip)
        with self._render_lock:
            return self._answer(self._render(openmetrics, gzip), openmetrics, gzip)

    def prewarm(self) -> None:
        """After a collection cycle: render what scrapers asked for recently.
        From the first call on, scrapers never render the per-pod part."""
        with self._render_lock:
            recent = time.monotonic() - WANTED_SECONDS
            warm = set()
            for (openmetrics, gzip), asked in sorted(self._wanted.items()):
                if asked >= recent:
                    self._render(openmetrics, gzip)
                    warm.add(openmetrics)
            self._warm = frozenset(warm)

    def _render(self, openmetrics: bool, gzip: bool) -> _Rendered:
        head_key, tail_key = self._head_key(), self._tail_key()
        rendered = self._formats.get(openmetrics)
        if rendered is None or not _same(rendered.head_key, head_key):
            rendered = _Rendered(head_key, self._render_head(openmetrics), tail_key, self._render_tail(openmetrics))
        elif not _same(rendered.tail_key, tail_key):
            rendered = _Rendered(head_key, rendered.head, tail_key, self._render_tail(openmetrics),
                                 rendered.gz_state, rendered.gz_head)
        if gzip:
            rendered = rendered.with_gzip()
        with self._swap_lock:
            self._formats[openmetrics] = rendered
        return rendered

    @staticmethod
    def _answer(rendered: _Rendered, openmetrics: bool, gzip: bool) -> Exposition:
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        if gzip:
            assert rendered.gz_tail is not None
            return Exposition((rendered.gz_head, rendered.gz_tail), content_type, "gzip")
        return Exposition((*rendered.head, rendered.tail), content_type)


class _Families(PromCollector):
    def __init__(self, produce: Callable[[], Iterable[Metric]]) -> None:
        self.produce = produce

    def collect(self) -> Iterator[Metric]:
        return iter(self.produce())


def _family(
    spec: MetricSpec, labels: list[str],
) -> CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily:
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=labels)
    if spec.kind == "gauge":
        return GaugeMetricFamily(spec.name, spec.help, labels=labels)
    return HistogramMetricFamily(spec.name, spec.help, labels=labels)


class ViewSource(Protocol):
    """What publishes views (the agent): the exporter reads `view` only."""

    @property
    def view(self) -> CollectionView: ...


class KpodCollector(PromCollector):
    def __init__(self, source: ViewSource) -> None:
        self.source = source
        self._cache = ExpositionCache(self._head_key, self._tail_key, self._head, self._tail, frame=3)

    def collect(self) -> Iterator[Metric]:
        yield from self.pod_metrics()
        yield from self._with_cluster(lambda: [*self.restart_metrics(), *self.self_metrics()]).collect()

    def _with_cluster(self, families: Callable[[], list[Metric]]) -> PromCollector:
        """clusterName (node config) as a cluster label on every sample."""
        return constant_labels.ConstantLabel(_Families(families), "cluster",
                                             lambda: constant_labels.cluster_of(self.source.view))

    # ---- per-pod series -------------------------------------------------

    def pod_series(self, view: CollectionView) -> Iterator[tuple[MetricSpec, list[str],
                                                                 dict[tuple[str, ...], float | Hist]]]:
        """Per metric: its spec, label names, and label values -> value,
        with cgroups resolved to pods of the same view and colliding series summed."""
        config = view.config
        if config is None:
            return
        node = view.node_name
        cluster = config.clusterName
        include = list(config.includeLabels)
        extra_names = [label_name(n) for n in include]
        index = view.index
        pods = index.pods

        # Label values per index entry, shared by the collectors (by id: the
        # entries live as long as the view).
        identities: dict[int, tuple[str, ...]] = {}

        def identity(entry: CgroupEntry) -> tuple[str, ...]:
            who = identities.get(id(entry))
            if who is None:
                pod = pods.get(entry.pod_uid)
                pod_labels = pod.labels if pod is not None else {}
                who = identities[id(entry)] = (entry.namespace, entry.pod, entry.container, node,
                                               *(pod_labels.get(n, "") for n in include))
            return who

        for collector in view.collectors.values():
            snapshot = collector.snapshot
            if not collector.attached or snapshot is None:
                continue
            identity_cache: dict[int, tuple[str, ...] | None] = {}
            for spec in collector.specs:
                series = snapshot.data.get(spec.name) or {}
                if spec.per_pod:
                    labels = [*POD_LABELS, *extra_names, *spec.labels]
                else:
                    labels = ["node", *spec.labels]
                merged: dict[tuple[str, ...], float | Hist] = {}
                for (cgid, extra), value in series.items():
                    if spec.per_pod:
                        if cgid in identity_cache:
                            who = identity_cache[cgid]
                        else:
                            entry = collector.entry(index, cgid)
                            who = identity_cache[cgid] = None if entry is None else identity(entry)
                        if who is None:
                            continue
                        key = (*who, *extra)
                    else:
                        key = (node, *extra)
                    add_into(merged, key, value)
                if cluster:  # clusterName: a cluster label on every series
                    labels, merged = ["cluster", *labels], {(cluster, *k): v for k, v in merged.items()}
                yield spec, labels, merged

    def pod_metrics(self) -> Iterator[Metric]:
        view = self.source.view
        config = view.config
        if config is None:
            return
        bucket_min, bucket_max = config.histogramBuckets.min, config.histogramBuckets.max
        for spec, labels, merged in self.pod_series(view):
            family = _family(spec, labels)
            for key, value in merged.items():
                if isinstance(family, HistogramMetricFamily) and isinstance(value, Hist):
                    buckets = log2_to_buckets(value.slots, spec.unit_seconds, bucket_min, bucket_max)
                    family.add_metric(list(key), buckets, value.sum * spec.unit_seconds)
                elif not isinstance(family, HistogramMetricFamily) and not isinstance(value, Hist):
                    family.add_metric(list(key), value)
                else:
                    raise TypeError(f"{spec.name}: a {spec.kind} spec read a {type(value).__name__}")
            yield family

    def render_pod_text(self, openmetrics: bool = False) -> str:
        """The per-pod families in Prometheus text format 0.0.4 (or
        OpenMetrics 1.0.0), written directly: the same series as
        pod_metrics(), at a third of the cost of building sample objects and
        formatting them one by one, which matters at tens of thousands of
        lines per scrape. Tests compare both paths, in both formats."""
        view = self.source.view
        config = view.config
        if config is None:
            return ""
        bucket_min, bucket_max = config.histogramBuckets.min, config.histogramBuckets.max
        escape_help = _escape_value if openmetrics else _escape_help
        out: list[str] = []
        label_cache: dict[tuple[str, ...], str] = {}
        for spec, labels, merged in self.pod_series(view):
            base = spec.name
            if spec.kind == "counter" and not base.endswith("_total"):
                base += "_total"
            # OpenMetrics names a counter family without its _total suffix.
            family = base[:-len("_total")] if openmetrics and spec.kind == "counter" else base
            out.append(f"# HELP {family} {escape_help(spec.help)}\n# TYPE {family} {spec.kind}\n")
            for key, value in merged.items():
                lbl = label_cache.get(key)
                if lbl is None:
                    lbl = ",".join(f'{n}="{_escape_value(v)}"' for n, v in zip(labels, key, strict=True))
                    label_cache[key] = lbl
                if isinstance(value, Hist):
                    sep = "," if lbl else ""
                    for le, count in log2_to_buckets(value.slots, spec.unit_seconds, bucket_min, bucket_max):
                        le_text = le if le == "+Inf" else floatToGoString(float(le))
                        out.append(f'{base}_bucket{{{lbl}{sep}le="{le_text}"}} {floatToGoString(count)}\n')
                    total = float(sum(value.slots))
                    out.append(f"{base}_count{{{lbl}}} {floatToGoString(total)}\n")
                    out.append(f"{base}_sum{{{lbl}}} {floatToGoString(value.sum * spec.unit_seconds)}\n")
                else:
                    out.append(f"{base}{{{lbl}}} {floatToGoString(value)}\n")
        return "".join(out)

    def _library_text(self, families: Callable[[], list[Metric]], openmetrics: bool) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self._with_cluster(families))
        if openmetrics:
            return openmetrics_exposition.generate_latest(registry)
        return generate_latest(registry)

    def render_text(self, openmetrics: bool = False) -> bytes:
        """Everything in text format 0.0.4 (or OpenMetrics, with its # EOF):
        pod series written directly, the few dozen other series through
        prometheus_client."""
        return (self.render_pod_text(openmetrics).encode()
                + self._library_text(lambda: [*self.restart_metrics(), *self.self_metrics()], openmetrics))

    def exposition(self, accept: str = "", gzip: bool = False) -> Exposition:
        """/metrics for one scraper: the same bytes for every scraper until
        the next collection cycle (or config, or pod list)."""
        return self._cache.get(wants_openmetrics(accept), gzip)

    def prewarm(self) -> None:
        """Render, after a collection cycle, what scrapers asked for recently."""
        self._cache.prewarm()

    def _head(self, openmetrics: bool) -> tuple[bytes, ...]:
        """The part that changes only with snapshots, pods and config (in
        parts: joining megabytes would copy them once more)."""
        restart = self._library_text(lambda: list(self.restart_metrics()), openmetrics)
        if openmetrics:
            restart = restart.removesuffix(b"# EOF\n")
        return self.render_pod_text(openmetrics).encode(), restart

    def _tail(self, openmetrics: bool) -> bytes:
        """Self metrics: a few dozen lines, new every cycle."""
        return self._library_text(lambda: list(self.self_metrics()), openmetrics)

    def _head_key(self) -> tuple[object, ...]:
        view = self.source.view
        # Config, pods and filters first: the cache's frame (see ExpositionCache).
        return (view.config, view.index, view.filters,
                *(part for c in view.collectors.values() for part in (c.snapshot, c.specs, c.resolved)))

    def _tail_key(self) -> tuple[object, ...]:
        # Every published view is new: its self metrics are rendered once.
        return (self.source.view,)

    def restart_metrics(self) -> Iterator[Metric]:
        view = self.source.view
        config = view.config
        if config is None or view.count_all:  # no pods, no containers
            return
        include = list(config.includeLabels)
        family = GaugeMetricFamily(
            "kpod_container_restarts", "Container restart count reported by Kubernetes.",
            labels=[*POD_LABELS, *(label_name(n) for n in include)])
        for pod in view.index.pods.values():
            if not filters.pod_selected(config, pod.namespace, pod.labels):
                continue
            for container in pod.containers:
                family.add_metric(
                    [pod.namespace, pod.name, container.name, view.node_name,
                     *(pod.labels.get(n, "") for n in include)],
                    float(container.restart_count))
        yield family

    # ---- self-monitoring ------------------------------------------------

    def self_metrics(self) -> Iterator[Metric]:
        view = self.source.view
        config = view.config
        info = dict(runtime_info.build_info())
        build = GaugeMetricFamily("kpod_build_info", "Build information (value 1).", labels=list(info))
        build.add_metric(list(info.values()), 1.0)
        yield build
        generation = GaugeMetricFamily("kpod_agent_config_generation", "Generation of the applied node config.")
        if config is not None:
            generation.add_metric([], float(config.generation))
        yield generation

        reloads = CounterMetricFamily("kpod_config_reloads_total", "Config documents applied or rejected.",
                                      labels=["result"])
        reloads.add_metric(["success"], float(view.reloads_success))
        reloads.add_metric(["error"], float(view.reloads_error))
        yield reloads

        wanted = list(config.node_collectors()) if config else []
        attached = GaugeMetricFamily("kpod_collector_attached", "1 when the collector runs, 0 when it failed.",
                                     labels=["collector"])
        duration = GaugeMetricFamily("kpod_collector_duration_seconds", "Duration of the collector's last read.",
                                     labels=["collector"])
        errors = CounterMetricFamily("kpod_collector_errors_total", "Failed loads and reads of the collector.",
                                     labels=["collector"])
        skipped = CounterMetricFamily("kpod_collector_skipped_total",
                                      "Collection cycles in which the collector's interval had not elapsed.",
                                      labels=["collector"])
        cgroup_errors = CounterMetricFamily("kpod_cgroup_read_errors_total", "Cgroup files that could not be read.",
                                            labels=["collector"])
        load = GaugeMetricFamily("kpod_bpf_program_load_duration_seconds",
                                 "Compile, load and attach time of the collector's BPF program.", labels=["program"])
        entries = GaugeMetricFamily("kpod_bpf_map_entries", "Entries in a BPF map at the last read.",
                                    labels=["map", "collector"])
        capacity = GaugeMetricFamily("kpod_bpf_map_capacity", "Maximum entries of a BPF map.",
                                     labels=["map", "collector"])
        update_errors = CounterMetricFamily("kpod_bpf_map_update_errors_total",
                                            "BPF map updates refused (map full).", labels=["map", "collector"])
        not_counted = GaugeMetricFamily("kpod_pods_not_counted",
                                        "Pods the collector cannot count: its cgroup filter map is full "
                                        "(raise maxCgroups).", labels=["collector"])
        unknown = CounterMetricFamily("kpod_unknown_cgroup_events",
                                      "What BPF counted for cgroup ids that are no counted pod's (in mode none: "
                                      "cgroups gone before they were read), by the metric it was for: its "
                                      "increments, or a histogram's observations. In no other series.",
                                      labels=["collector", "metric"])
        for name in wanted:
            collector = view.collectors.get(name)
            attached.add_metric([name], 1.0 if collector is not None and collector.attached else 0.0)
            if collector is None:
                continue
            duration.add_metric([name], collector.duration)
            errors.add_metric([name], float(collector.errors_total))
            skipped.add_metric([name], float(collector.skipped_total))
            if not collector.attached:
                continue
            cgroup_errors.add_metric([name], float(collector.cgroup_read_errors))
            if collector.load_seconds is not None:
                load.add_metric([name], collector.load_seconds)
            for map_name, (count, cap) in collector.map_stats.items():
                entries.add_metric([map_name, name], float(count))
                capacity.add_metric([map_name, name], float(cap))
            for map_name, count in collector.map_update_errors.items():
                update_errors.add_metric([map_name, name], float(count))
            not_counted.add_metric([name], float(collector.pods_not_counted))
            for spec in collector.specs:
                if spec.map is not None and spec.per_pod or spec.name in collector.unknown_events:
                    unknown.add_metric([name, spec.name], collector.unknown_events.get(spec.name, 0.0))
        yield from (attached, duration, errors, skipped, cgroup_errors, load, entries, capacity, update_errors,
                    not_counted, unknown)

        cycle = GaugeMetricFamily("kpod_collection_cycle_duration_seconds", "Duration of the last collection cycle.")
        cycle.add_metric([], view.cycle_duration)
        yield cycle
        pods = GaugeMetricFamily("kpod_discovery_pods", "Pods known to discovery on this node.")
        pods.add_metric([], float(len(view.index.pods)))
        yield pods
        derr = CounterMetricFamily("kpod_discovery_errors_total", "Failed discovery lists or watches.")
        derr.add_metric([], float(view.discovery_errors))
        yield derr
        pushes = CounterMetricFamily("kpod_otlp_exports", "OTLP pushes of the series, by result (error: receiver "
                                     "unreachable, an error answer, or the headers file unreadable).",
                                     labels=["result"])
        for result in ("success", "error"):
            pushes.add_metric([result], float(view.otlp_exports.get(result, 0)))
        yield pushes
        yield from self.topology_metrics()

    def topology_metrics(self) -> Iterator[Metric]:
        """The edge store's size and evictions, and bytes and connections per
        edge and side (at most topology.maxEdges edges, so bounded). Each
        side is one socket's count: a dashboard takes the max over `side`
        and `node` so an edge seen from both ends counts once."""
        view = self.source.view
        network = view.collectors.get("network")
        if network is None or not network.attached:
            return
        snapshot = network.snapshot
        edges = GaugeMetricFamily("kpod_topology_edges", "TCP edges the agent keeps (bounded by topology.maxEdges).",
                                  labels=["node"])
        edges.add_metric([view.node_name], float(len(snapshot.edges) if snapshot is not None else 0))
        evicted = CounterMetricFamily("kpod_topology_edges_evicted",
                                      "TCP edges evicted from the agent's bounded edge store (least recently "
                                      "active first).", labels=["node"])
        evicted.add_metric([view.node_name], float(snapshot.edges_evicted if snapshot is not None else 0))
        yield from (edges, evicted)
        labels = ["source", "destination", "port", "protocol", "side", "node"]
        edge_bytes = CounterMetricFamily("kpod_topology_edge_bytes",
                                         "TCP payload bytes of an edge, both ways, as counted by one side's sockets.",
                                         labels=labels)
        connections = CounterMetricFamily("kpod_topology_edge_connections",
                                          "TCP connections of an edge, as counted by one side's sockets.",
                                          labels=labels)
        for edge in view.topology["edges"] if snapshot is not None else ():
            for side, counts in edge["sides"].items():
                values = [topology.end_id(edge["source"]), topology.end_id(edge["destination"]),
                          str(edge["port"]), edge["protocol"], side, view.node_name]
                edge_bytes.add_metric(values, float(counts["bytesSent"] + counts["bytesReceived"]))
                connections.add_metric(values, float(counts["connections"]))
        yield from (edge_bytes, connections)
