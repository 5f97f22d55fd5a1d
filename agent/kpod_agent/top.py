"""kpod-agent top: a live per-pod view of a running agent, read from its /metrics.

    kpod-agent top [--url URL] [--interval SECONDS] [--sort COLUMN] [--namespace NS]
                   [--limit N] [--count N] [--once] [--no-color]

On a terminal the view redraws in place; piped or redirected, it prints one
frame after another (with --count, that many).

Only plain HTTP to /metrics is needed, so it works on the node and through
`kubectl port-forward -n kpod-system ds/kpod-agent 9090:9090`.

How the numbers are made, as Prometheus would make them:
- a rate is the increase of each series between two scrapes divided by the
  time between them, then summed per pod (over containers, syscalls, errnos).
  A counter that went down belongs to a restarted agent: its new value is
  the increase. A series absent from the previous scrape counts from 0 (the
  agent creates a series at its first event).
- RUNQ p99 is histogram_quantile(0.99) over the increases of the cumulative
  buckets between the two scrapes (over the totals on the first frame),
  interpolating linearly inside the bucket.
- OOM is the total of OOM kills the agent has seen (red when it grew).
- "-" means the collector is not running (its family is absent from the
  scrape) or, for RUNQ p99, that nothing waited in the run queue.

Keys in the live view: s / S next / previous sort column, 1-9 and 0 pick a
column, r reverses the order, q quits.
"""
from __future__ import annotations

import argparse
import http.client
import math
import os
import select
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from kpod_agent import contract
from kpod_agent.contract import agent_status_from

DEFAULT_URL = "http://127.0.0.1:9090"
DEFAULT_INTERVAL = 2.0
PodKey = tuple[str, str]  # (namespace, pod)
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


# ---- what the view shows ----------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str  # name for --sort
    title: str
    kind: str  # "name" | "rate" | "p99" | "total"
    family: str = ""  # metric family (as the parser names it) that must be present
    sample: str = ""  # sample name summed or read
    unit: str = ""  # "" | "B" | "s"
    short: str = ""  # title on a narrow terminal


COLUMNS: tuple[Column, ...] = (
    Column("namespace", "NAMESPACE", "name", short="NS"),
    Column("pod", "POD", "name", short="POD"),
    Column("runq", "RUNQ p99", "p99", "kpod_cpu_runqueue_latency_seconds",
           "kpod_cpu_runqueue_latency_seconds_bucket", "s", "RQ99"),
    Column("csw", "CSW/s", "rate", "kpod_cpu_context_switches", "kpod_cpu_context_switches_total", short="CSW"),
    Column("tx", "TCP TX/s", "rate", "kpod_net_tcp_bytes_sent", "kpod_net_tcp_bytes_sent_total", "B", "TX"),
    Column("rx", "TCP RX/s", "rate", "kpod_net_tcp_bytes_received", "kpod_net_tcp_bytes_received_total", "B",
           "RX"),
    Column("retrans", "RETRANS/s", "rate", "kpod_net_tcp_retransmits", "kpod_net_tcp_retransmits_total",
           short="RETR"),
    Column("syscalls", "SYSCALLS/s", "rate", "kpod_syscall_count", "kpod_syscall_count_total", short="SYSC"),
    Column("errors", "ERRORS/s", "rate", "kpod_syscall_errors", "kpod_syscall_errors_total", short="ERR"),
    Column("oom", "OOM", "total", "kpod_mem_oom_kills", "kpod_mem_oom_kills_total", short="OOM"),
)
COLUMN_BY_KEY = {c.key: c for c in COLUMNS}
# Accepted spellings of --sort: key, title, title without "/s".
_SORT_ALIASES = {
    alias.lower(): c.key
    for c in COLUMNS
    for alias in (c.key, c.title, c.short, c.title.removesuffix("/s"), c.title.replace(" ", ""))
}
_WANTED_SAMPLES = frozenset(c.sample for c in COLUMNS if c.sample)


# ---- parsing ----------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """The parts of one /metrics answer the view needs."""

    at: float  # time.monotonic() when the answer arrived
    samples: dict[SeriesKey, float]  # per-pod samples of the columns' metrics
    pods: frozenset[PodKey]  # every pod with at least one series
    families: frozenset[str]  # metric families present (collector running)
    nodes: frozenset[str] = frozenset()


class ScrapeError(Exception):
    """The agent could not be read; the message says what to do."""


def parse_metrics(text: str, at: float) -> Scrape:
    """Prometheus text exposition -> Scrape. Raises ValueError on malformed text."""
    samples: dict[SeriesKey, float] = {}
    pods: set[PodKey] = set()
    families: set[str] = set()
    nodes: set[str] = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            labels = sample.labels
            namespace, pod = labels.get("namespace"), labels.get("pod")
            if namespace is None or pod is None:
                continue  # node-level and self-monitoring series
            pods.add((namespace, pod))
            if "node" in labels:
                nodes.add(labels["node"])
            if sample.name in _WANTED_SAMPLES and _usable(sample.name, labels, sample.value):
                key = (sample.name, tuple(sorted(labels.items())))
                samples[key] = samples.get(key, 0.0) + float(sample.value)
    return Scrape(at=at, samples=samples, pods=frozenset(pods), families=frozenset(families),
                  nodes=frozenset(nodes))


def _usable(name: str, labels: dict[str, str], value: float) -> bool:
    """A sample the arithmetic can take: a number, and a bucket with a bound."""
    if math.isnan(value) or value < 0:
        return False
    if name.endswith("_bucket"):
        try:
            return not math.isnan(float(labels.get("le", "nan")))
        except ValueError:
            return False
    return True


# ---- arithmetic -------------------------------------------------------------


def increase(previous: float | None, current: float) -> float:
    """Counter increase between two scrapes; a drop means the agent restarted."""
    if previous is None or current < previous:
        return current
    return current - previous


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Quantile from cumulative (le, count) buckets, as PromQL's histogram_quantile.

    None when there are no observations. Linear interpolation inside the
    bucket holding the rank; the lowest bucket starts at 0; a rank in the
    +Inf bucket answers the highest finite bound.
    """
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    # Buckets must be monotonic; a torn read could break that, so clamp upwards.
    counts: list[float] = []
    for _, count in ordered:
        counts.append(max(count, counts[-1]) if counts else count)
    total = counts[-1]
    if total <= 0 or math.isnan(total):
        return None
    rank = q * total
    index = next(i for i, c in enumerate(counts) if c >= rank)
    if index == len(ordered) - 1:
        return ordered[-2][0] if len(ordered) > 1 else None
    upper = ordered[index][0]
    if index == 0:
        lower, below = 0.0, 0.0
        if upper <= 0:
            return upper
    else:
        lower, below = ordered[index - 1][0], counts[index - 1]
    in_bucket = counts[index] - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


def _le(labels: tuple[tuple[str, str], ...]) -> float:
    return float(dict(labels)["le"])


def _pod_of(labels: tuple[tuple[str, str], ...]) -> PodKey:
    found = dict(labels)
    return (found["namespace"], found["pod"])


def merge_cumulative(series: Iterable[dict[float, float]]) -> list[tuple[float, float]]:
    """Sum cumulative histograms whose bounds may differ: a histogram missing a
    bound contributes its count at the nearest bound below (cumulative counts
    only grow), or 0 below its first bound."""
    series = list(series)
    bounds = sorted({le for hist in series for le in hist})
    merged = dict.fromkeys(bounds, 0.0)
    for hist in series:
        own = sorted(hist.items())
        i, last = 0, 0.0
        for le in bounds:
            while i < len(own) and own[i][0] <= le:
                last = own[i][1]
                i += 1
            merged[le] += last
    return sorted(merged.items())


@dataclass(frozen=True)
class PodRow:
    namespace: str
    pod: str
    values: dict[str, float | None]  # column key -> value; None = not collected / no data
    oom_grew: bool = False


@dataclass(frozen=True)
class Frame:
    rows: list[PodRow]
    elapsed: float | None  # seconds between the two scrapes; None on the first frame
    nodes: frozenset[str] = frozenset()
    missing: tuple[str, ...] = ()  # titles of columns whose collector is not running
    nodes_switched: bool = False  # the two scrapes came from different agents


def compute_rows(previous: Scrape | None, current: Scrape, namespace: str | None = None) -> Frame:
    """One row per pod of `current`: rates and p99 over the time since `previous`."""
    elapsed = current.at - previous.at if previous is not None else None
    if elapsed is not None and elapsed <= 0:
        previous, elapsed = None, None
    by_pod: dict[PodKey, dict[str, list[SeriesKey]]] = defaultdict(lambda: defaultdict(list))
    for key in current.samples:
        by_pod[_pod_of(key[1])][key[0]].append(key)
    old = previous.samples if previous is not None else {}
    rows: list[PodRow] = []
    for pod_key in sorted(current.pods):
        if namespace is not None and pod_key[0] != namespace:
            continue
        own = by_pod.get(pod_key, {})
        values: dict[str, float | None] = {"namespace": None, "pod": None}
        oom_grew = False
        # A pod first seen now has no rate yet: its counters may predate it
        # (an agent behind a Service answering for another node, a pod that
        # just passed a filter). A new series of a known pod counts from 0.
        seen = previous is not None and pod_key in previous.pods
        for column in COLUMNS:
            if column.kind == "name":
                continue
            if column.family not in current.families:
                values[column.key] = None
                continue
            keys = own.get(column.sample, [])
            if column.kind == "total":
                values[column.key] = sum(current.samples[k] for k in keys)
                if seen and previous is not None and column.family in previous.families:
                    oom_grew = oom_grew or any(current.samples[k] > old.get(k, 0.0) for k in keys)
            elif column.kind == "rate":
                if elapsed is None or not seen:
                    values[column.key] = None
                else:
                    values[column.key] = sum(increase(old.get(k), current.samples[k]) for k in keys) / elapsed
            else:
                values[column.key] = _pod_quantile(keys, current.samples, old if seen else None)
        rows.append(PodRow(pod_key[0], pod_key[1], values, oom_grew))
    missing = tuple(c.title for c in COLUMNS if c.family and c.family not in current.families)
    switched = previous is not None and bool(previous.nodes) and previous.nodes != current.nodes
    return Frame(rows=rows, elapsed=elapsed, nodes=current.nodes, missing=missing, nodes_switched=switched)


def _pod_quantile(keys: list[SeriesKey], current: dict[SeriesKey, float],
                  previous: dict[SeriesKey, float] | None, q: float = 0.99) -> float | None:
    # Group bucket samples into histograms (same labels but le), then take each
    # histogram's increase, falling back to its totals if any bucket went down.
    hists: dict[tuple[tuple[str, str], ...], dict[float, float]] = defaultdict(dict)
    olds: dict[tuple[tuple[str, str], ...], dict[float, float | None]] = defaultdict(dict)
    for key in keys:
        ident = tuple(kv for kv in key[1] if kv[0] != "le")
        le = _le(key[1])
        hists[ident][le] = current[key]
        olds[ident][le] = previous.get(key) if previous is not None else None
    deltas: list[dict[float, float]] = []
    for ident, hist in hists.items():
        before = olds[ident]
        if previous is None or any(b is not None and hist[le] < b for le, b in before.items()):
            deltas.append(hist)
        else:
            deltas.append({le: hist[le] - (before[le] or 0.0) for le in hist})
    return histogram_quantile(q, merge_cumulative(deltas))


def sort_rows(rows: list[PodRow], key: str, reverse: bool = False) -> list[PodRow]:
    """Busiest first for numbers, alphabetical for names; missing values last."""
    if key in ("namespace", "pod"):
        primary = (lambda r: (r.namespace, r.pod)) if key == "namespace" else (lambda r: (r.pod, r.namespace))
        return sorted(rows, key=primary, reverse=reverse)
    present = [r for r in rows if r.values.get(key) is not None]
    absent = [r for r in rows if r.values.get(key) is None]
    present.sort(key=lambda r: (r.namespace, r.pod))
    present.sort(key=lambda r: r.values[key] or 0.0, reverse=not reverse)
    absent.sort(key=lambda r: (r.namespace, r.pod))
    return present + absent


def resolve_sort(name: str) -> str:
    try:
        return _SORT_ALIASES[name.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"unknown column {name!r}; one of: {', '.join(c.key for c in COLUMNS)}") from None


# ---- formatting -------------------------------------------------------------


def _scaled(value: float, steps: Sequence[tuple[float, str]]) -> str:
    """Three significant digits with the largest unit that keeps the number >= 1
    (steps from the largest unit down)."""
    index = next((i for i, (scale, _) in enumerate(steps) if value / scale >= 1), len(steps) - 1)
    x = value / steps[index][0]
    text = f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"
    if float(text) >= 1000 and index > 0:  # 999.96k rounds to 1000k: 1.00M instead
        index -= 1
        text = f"{value / steps[index][0]:.2f}"
    return text + steps[index][1]


_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))
_TIME = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))


def format_value(value: float | None, column: Column) -> str:
    if value is None:
        return "-"
    if column.kind == "total":
        return f"{value:.0f}"
    if column.unit == "s":
        return "0" if value == 0 else _scaled(value, _TIME)
    if value == 0:
        return "0"
    if value < 1:
        return f"{value:.2f}"
    return _scaled(value, _SI) + column.unit


NAME_WIDTH = 56


def shorten(name: str, width: int) -> str:
    """Keep both ends of a long name (standalone pods are cgroup paths)."""
    if len(name) <= width:
        return name
    head = (width - 1) // 3
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


def render(frame: Frame, source: str, sort_key: str, reverse: bool = False, limit: int | None = None,
           error: str | None = None, interactive: bool = False, note: str | None = None,
           width: int | None = None, interval: float | None = None) -> RenderableType:
    """The whole screen: a header line, the pod table, and what is left out.
    With `width`, long pod names are cut in the middle so every number fits."""
    rows = sort_rows(frame.rows, sort_key, reverse)
    shown = rows if limit is None else rows[:max(limit, 0)]
    sort_col = COLUMN_BY_KEY[sort_key]
    arrow = " ▲" if reverse else " ▼"
    body: list[list[Text]] = []
    for row in shown:
        cells = [Text(row.namespace), Text(row.pod)]
        for column in COLUMNS[2:]:
            style = "bold red" if column.key == "oom" and row.oom_grew else ""
            if column.key == "errors" and (row.values.get("errors") or 0) > 0:
                style = "yellow"
            cells.append(Text(format_value(row.values.get(column.key), column), style=style))
        body.append(cells)
    # Full titles 3 apart; on a narrow terminal short ones 2 apart. Whatever
    # the other columns leave is the pod name's, cut in the middle.
    for compact in (False, True):
        titles = [(c.short if compact else c.title) + arrow * (c.key == sort_key) for c in COLUMNS]
        ns_width = 12 if compact else NAME_WIDTH // 2
        widths = [len(t) for t in titles]
        for cells in body:
            widths = [max(w, min(c.cell_len, ns_width) if i == 0 else c.cell_len)
                      for i, (w, c) in enumerate(zip(widths, cells, strict=True))]
        gap = 2 if compact else 3
        others = sum(widths) - widths[1] + gap * (len(COLUMNS) - 1)
        if width is None or width - others >= min(widths[1], 12):
            break
    pod_width = NAME_WIDTH if width is None else max(8, min(NAME_WIDTH, width - others))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold",
                  padding=(0, 0, 0, 1) if compact else (0, 1))
    for title, column in zip(titles, COLUMNS, strict=True):
        if column.kind == "name":
            table.add_column(title, overflow="ellipsis", min_width=len(title))
        else:
            table.add_column(title, justify="right", no_wrap=True, min_width=len(title))
    for cells in body:
        table.add_row(Text(shorten(cells[0].plain, ns_width)), Text(shorten(cells[1].plain, pod_width)), *cells[2:])

    nodes = ", ".join(sorted(frame.nodes)) or "-"
    if frame.elapsed is not None:
        span = f"rates over {frame.elapsed:.3f} s"
    else:
        span = f"first scrape, rates in {interval:g} s" if interval else "first scrape, rates next frame"
    header = Text.assemble(
        ("kpod top ", "bold"), (source, "cyan"), f"  node {nodes}  {len(frame.rows)} pods  {span}  ",
        f"sort {sort_col.title}{' (reversed)' if reverse else ''}",
    )
    parts: list[RenderableType] = [header]
    if error:
        parts.append(Text(error, style="bold red"))
    parts.append(table)
    notes = []
    if len(shown) < len(rows):
        notes.append(f"{len(rows) - len(shown)} more pods not shown (--limit, --namespace)")
    if note:
        notes.append(note)
    if frame.nodes_switched:
        notes.append("the last two scrapes came from different nodes (a Service?): point --url at one agent, "
                     "e.g. kubectl port-forward -n kpod-system pod/<agent pod> 9090:9090")
    if frame.missing:
        notes.append(f"'-': collector off for {', '.join(frame.missing)}")
    if interactive:
        notes.append("keys: s/S sort  1-9,0 column  r reverse  q quit")
    if notes:
        parts.append(Text("  ".join(notes), style="dim"))
    return Group(*parts)


# ---- reading the agent -----------------------------------------------------


def metrics_url(url: str) -> str:
    """Accept host:port, http://host:port or a full URL; default path /metrics."""
    return contract.agent_url(url, "/metrics")


def scrape(url: str, timeout: float = 5.0, clock: Callable[[], float] = time.monotonic) -> Scrape:
    """GET the metrics page and parse it; every failure is a ScrapeError with advice."""
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = answer.read()
        at = clock()
    except urllib.error.HTTPError as exc:
        raise ScrapeError(f"{url} answered HTTP {exc.code} {exc.reason}: is it a kpod-agent?") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        # HTTPException: a connection cut mid-answer (an agent restarting, a dropped port-forward)
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        raise ScrapeError(
            f"cannot reach {url} ({reason}): is kpod-agent running? start it with `sudo make run`, "
            "or in a cluster: kubectl port-forward -n kpod-system ds/kpod-agent 9090:9090"
        ) from None
    try:
        return parse_metrics(body.decode("utf-8", errors="replace"), at)
    except ValueError as exc:
        raise ScrapeError(f"{url} did not answer Prometheus text ({exc}): is it a kpod-agent?") from None


# Collectors behind the columns: their interval is how often the numbers move.
SHOWN_COLLECTORS = ("cpu", "network", "memory", "syscall")


def config_url(metrics: str) -> str:
    parts = urlsplit(metrics)
    return urlunsplit((parts.scheme, parts.netloc, "/config", "", ""))


def collection_interval(document: object) -> float | None:
    """Longest collection interval among the attached collectors top shows,
    from the agent's /config document; None when it does not say."""
    status = agent_status_from(document)
    if status is None:
        return None
    intervals = [
        entry.interval for name, entry in status.collectors.items()
        if name in SHOWN_COLLECTORS and entry.attached and entry.interval is not None and entry.interval > 0
    ]
    return max(intervals) if intervals else None


def fetch_collection_interval(url: str, timeout: float = 5.0) -> float | None:
    """Best effort: an agent behind a proxy that only passes /metrics still works."""
    import json

    try:
        with urllib.request.urlopen(config_url(url), timeout=timeout) as answer:
            return collection_interval(json.loads(answer.read()))
    except (OSError, ValueError, http.client.HTTPException):
        return None


def choose_interval(asked: float | None, collected_every: float | None) -> tuple[float, str | None]:
    """Scrape interval and a note when it is shorter than the agent's collection:
    counters move only once per collection, so shorter windows alternate between
    0 and bursts."""
    if asked is None:
        return max(DEFAULT_INTERVAL, collected_every or 0.0), None
    if collected_every is not None and asked < collected_every:
        return asked, (f"the agent collects every {collected_every:g} s: rates over {asked:g} s jump "
                       f"between 0 and bursts (use --interval {collected_every:g})")
    return asked, None


# ---- the command -----------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpod-agent top",
        description="Live per-pod view of a running kpod-agent, read from its /metrics.",
        epilog="examples:\n"
               "  kpod-agent top\n"
               "  kpod-agent top --sort syscalls --namespace team-a\n"
               "  kubectl port-forward -n kpod-system ds/kpod-agent 9090:9090 & kpod-agent top\n"
               "  kpod-agent top --once --no-color      (one frame as text, after two scrapes)\n"
               "\ncolumns for --sort: " + ", ".join(c.key for c in COLUMNS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default=os.environ.get("KPOD_URL", DEFAULT_URL),
                        help=f"agent address or metrics URL (default $KPOD_URL, then {DEFAULT_URL})")
    parser.add_argument("--interval", type=_positive_float, metavar="SECONDS",
                        help=f"time between scrapes (default {DEFAULT_INTERVAL:g}, or the agent's collection "
                             "interval when longer: numbers move once per collection)")
    parser.add_argument("--sort", type=resolve_sort, default="csw", metavar="COLUMN",
                        help="column to sort by, busiest first (default csw)")
    parser.add_argument("--reverse", action="store_true", help="reverse the order")
    parser.add_argument("--namespace", "-n", metavar="NS", help="only pods of this namespace")
    parser.add_argument("--limit", type=_positive_int, metavar="N",
                        help="at most N rows (default: what fits the terminal; all with --once)")
    parser.add_argument("--once", action="store_true",
                        help="scrape twice, --interval apart, print one frame as text and exit")
    parser.add_argument("--count", type=_positive_int, metavar="N",
                        help="stop after N frames (default: until q or Ctrl-C)")
    parser.add_argument("--no-color", action="store_true", help="no colors (also when $NO_COLOR is set)")
    return parser


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}")
    return int(value)


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not number > 0 or math.isinf(number):
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        url = metrics_url(args.url)
    except ValueError as exc:
        print(f"kpod-agent top: {exc}", file=sys.stderr)
        return 2
    no_color = args.no_color or bool(os.environ.get("NO_COLOR"))
    args.interval, args.note = choose_interval(args.interval, fetch_collection_interval(url))
    try:
        if args.once:
            return run_once(url, args, no_color)
        return run_live(url, args, no_color)
    except ScrapeError as exc:
        print(f"kpod-agent top: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _timeout(interval: float) -> float:
    return max(2.0, min(interval, 10.0))


def run_once(url: str, args: argparse.Namespace, no_color: bool) -> int:
    first = scrape(url, _timeout(args.interval))
    time.sleep(args.interval)
    second = scrape(url, _timeout(args.interval))
    frame = compute_rows(first, second, args.namespace)
    console = _text_console(no_color)
    console.print(render(frame, url, args.sort, args.reverse, args.limit, note=args.note, width=console.width))
    return 0


def _text_console(no_color: bool) -> Console:
    # Wide enough for long pod names: this output goes to files, logs and READMEs.
    width = int(os.environ.get("COLUMNS", "0") or 0) or 200
    return Console(no_color=no_color, highlight=False, width=width, force_terminal=False if no_color else None)


@contextmanager
def _keys() -> Iterator[Callable[[float], str | None]]:
    """Single keypresses from a terminal stdin; without one, only waiting."""
    stdin = sys.stdin
    if not stdin or not stdin.isatty():
        def wait_only(timeout: float) -> str | None:
            time.sleep(max(timeout, 0))
            return None

        yield wait_only
        return
    import termios
    import tty

    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def wait(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], max(timeout, 0))
        return os.read(fd, 1).decode(errors="ignore") if ready else None

    try:
        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def handle_key(key: str, sort_key: str, reverse: bool) -> tuple[str, bool, bool]:
    """(sort key, reverse, quit) after one keypress."""
    keys = [c.key for c in COLUMNS]
    if key in ("q", "Q", "\x03"):
        return sort_key, reverse, True
    if key == "s":
        return keys[(keys.index(sort_key) + 1) % len(keys)], reverse, False
    if key == "S":
        return keys[(keys.index(sort_key) - 1) % len(keys)], reverse, False
    if key == "r":
        return sort_key, not reverse, False
    if key.isdigit():
        index = (int(key) - 1) % 10
        if index < len(keys):
            return keys[index], reverse, False
    return sort_key, reverse, False


class View:
    """What is on screen: the last good frame, and the last error if the latest
    scrape failed. A failed scrape never replaces the frame."""

    def __init__(self, url: str, namespace: str | None, timeout: float,
                 fetch: Callable[[str, float], Scrape] = scrape) -> None:
        self.url, self.namespace, self.timeout, self.fetch = url, namespace, timeout, fetch
        self.previous: Scrape | None = None
        self.frame: Frame | None = None
        self.error: str | None = None

    def refresh(self) -> None:
        try:
            current = self.fetch(self.url, self.timeout)
        except ScrapeError as exc:
            if self.frame is None:
                raise  # nothing to show yet: the caller says so and exits
            self.error = str(exc)
            return
        self.frame = compute_rows(self.previous, current, self.namespace)
        self.previous, self.error = current, None


def run_live(url: str, args: argparse.Namespace, no_color: bool) -> int:
    console = Console(no_color=no_color, highlight=False)
    view = View(url, args.namespace, _timeout(args.interval))
    view.refresh()  # unreachable at start: say so and exit
    if not console.is_terminal:
        return _stream(view, _text_console(no_color), args)
    from rich.live import Live

    sort_key, reverse = args.sort, args.reverse
    frames = 1

    def screen() -> RenderableType:
        assert view.frame is not None
        limit = args.limit if args.limit is not None else max(console.size.height - 7, 1)
        return render(view.frame, url, sort_key, reverse, limit, view.error, interactive=True, note=args.note,
                      width=console.size.width, interval=args.interval)

    with _keys() as wait_key, Live(screen(), console=console, screen=True, auto_refresh=False,
                                   vertical_overflow="crop") as live:
        deadline = time.monotonic() + args.interval
        while args.count is None or frames < args.count:
            key = wait_key(deadline - time.monotonic())
            if key:
                sort_key, reverse, stop = handle_key(key, sort_key, reverse)
                if stop:
                    return 0
                live.update(screen(), refresh=True)
                if time.monotonic() < deadline:
                    continue
            deadline = time.monotonic() + args.interval
            view.refresh()
            frames += 1
            live.update(screen(), refresh=True)
    return 0


def _stream(view: View, console: Console, args: argparse.Namespace) -> int:
    """Not a terminal (a pipe, a log file): one frame after another."""
    frames = 0
    while True:
        assert view.frame is not None
        console.print(render(view.frame, view.url, args.sort, args.reverse, args.limit, view.error,
                             note=args.note, width=console.width, interval=args.interval))
        console.print()
        console.file.flush()
        frames += 1
        if args.count is not None and frames >= args.count:
            return 0
        time.sleep(args.interval)
        view.refresh()


if __name__ == "__main__":
    sys.exit(main())
