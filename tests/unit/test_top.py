"""kpod-agent top: parsing, rates, p99 and rendering on hand-made exposition text."""
from __future__ import annotations

import dataclasses
import math
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from kpod_agent import top

POD = 'namespace="{ns}",pod="{pod}",container="{c}",node="node-1"'


def labels(ns: str = "team-a", pod: str = "pod-a", c: str = "app", **extra: str) -> str:
    text = POD.format(ns=ns, pod=pod, c=c)
    return "{" + ",".join([text, *(f'{k}="{v}"' for k, v in extra.items())]) + "}"


def exposition(syscalls: dict[tuple[str, str, str, str], float] | None = None,
               csw: dict[tuple[str, str, str], float] | None = None,
               runq: dict[tuple[str, str, str], list[tuple[str, float]]] | None = None,
               oom: dict[tuple[str, str, str], float] | None = None,
               pods: list[tuple[str, str]] | None = None) -> str:
    """Text as the agent writes it; a family is present only when its dict is given."""
    lines: list[str] = []
    if syscalls is not None:
        lines += ["# HELP kpod_syscall_count_total Calls.", "# TYPE kpod_syscall_count_total counter"]
        for (ns, pod, c, name), value in syscalls.items():
            lines.append(f"kpod_syscall_count_total{labels(ns, pod, c, syscall=name)} {value}")
    if csw is not None:
        lines += ["# HELP kpod_cpu_context_switches_total Switches.",
                  "# TYPE kpod_cpu_context_switches_total counter"]
        for (ns, pod, c), value in csw.items():
            lines.append(f"kpod_cpu_context_switches_total{labels(ns, pod, c)} {value}")
    if runq is not None:
        lines += ["# HELP kpod_cpu_runqueue_latency_seconds Wait.",
                  "# TYPE kpod_cpu_runqueue_latency_seconds histogram"]
        for (ns, pod, c), buckets in runq.items():
            for le, count in buckets:
                lines.append(f"kpod_cpu_runqueue_latency_seconds_bucket{labels(ns, pod, c, le=le)} {count}")
            lines.append(f"kpod_cpu_runqueue_latency_seconds_count{labels(ns, pod, c)} {buckets[-1][1]}")
            lines.append(f"kpod_cpu_runqueue_latency_seconds_sum{labels(ns, pod, c)} 0.5")
    if oom is not None:
        lines += ["# HELP kpod_mem_oom_kills_total Kills.", "# TYPE kpod_mem_oom_kills_total counter"]
        for (ns, pod, c), value in oom.items():
            lines.append(f"kpod_mem_oom_kills_total{labels(ns, pod, c)} {value}")
    lines += ["# HELP kpod_container_restarts Restarts.", "# TYPE kpod_container_restarts gauge"]
    for ns, pod in pods or []:
        lines.append(f"kpod_container_restarts{labels(ns, pod)} 0.0")
    # node-level and self-monitoring series carry no pod and make no row
    lines += ["# HELP kpod_irq_hw_count_total Irqs.", "# TYPE kpod_irq_hw_count_total counter",
              'kpod_irq_hw_count_total{node="node-1",irq="timer"} 5.0',
              "# HELP kpod_discovery_pods Pods.", "# TYPE kpod_discovery_pods gauge", "kpod_discovery_pods 2.0"]
    return "\n".join(lines) + "\n"


def parse_number(cell: str) -> tuple[float, float]:
    """A printed value and half of its last digit: '333kB' -> (333000, 500)."""
    match = re.fullmatch(r"(\d+(?:\.(\d+))?)([kMGT]?)B?", cell)
    assert match, f"not a number: {cell!r}"
    scale = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[match.group(3)]
    return float(match.group(1)) * scale, 0.5 * 10 ** -len(match.group(2) or "") * scale


def assert_shown(cell: str, expected: float, elapsed: float) -> None:
    """`cell` shows `expected`, to its printed digits and the 3 decimals of `elapsed`."""
    shown, half_digit = parse_number(cell)
    tolerance = half_digit + expected * 0.0005 / elapsed
    assert abs(shown - expected) <= tolerance, f"{cell} shown, {expected} expected"


def row(frame: top.Frame, pod: str) -> top.PodRow:
    found = [r for r in frame.rows if r.pod == pod]
    assert len(found) == 1, [r.pod for r in frame.rows]
    return found[0]


# ---- parsing -----------------------------------------------------------------


def test_parse_keeps_per_pod_series_and_family_presence() -> None:
    text = exposition(syscalls={("team-a", "pod-a", "app", "read"): 7}, pods=[("team-b", "pod-b")])
    scrape = top.parse_metrics(text, at=12.5)
    assert scrape.at == 12.5
    assert scrape.pods == {("team-a", "pod-a"), ("team-b", "pod-b")}
    assert scrape.nodes == {"node-1"}
    assert "kpod_syscall_count" in scrape.families
    assert "kpod_cpu_context_switches" not in scrape.families
    assert [v for (name, _), v in scrape.samples.items() if name == "kpod_syscall_count_total"] == [7.0]
    assert not [k for k in scrape.samples if k[0] == "kpod_irq_hw_count_total"]


def test_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        top.parse_metrics("<html>this is not a metrics page</html>\n", at=0)


# ---- rates -------------------------------------------------------------------


def test_increase_treats_a_drop_as_a_restart() -> None:
    assert top.increase(10, 25) == 15
    assert top.increase(None, 4) == 4
    assert top.increase(100, 3) == 3  # agent restarted: counted from 0 again
    assert top.increase(5, 5) == 0


def test_rates_summed_over_containers_and_syscalls() -> None:
    before = exposition(syscalls={("team-a", "pod-a", "app", "read"): 100, ("team-a", "pod-a", "side", "write"): 10,
                                  ("team-b", "pod-b", "app", "read"): 40},
                        csw={("team-a", "pod-a", "app"): 1000})
    after = exposition(syscalls={("team-a", "pod-a", "app", "read"): 160, ("team-a", "pod-a", "side", "write"): 30,
                                 ("team-b", "pod-b", "app", "read"): 40,
                                 ("team-a", "pod-a", "app", "futex"): 8},  # new series: counts from 0
                       csw={("team-a", "pod-a", "app"): 1500})
    frame = top.compute_rows(top.parse_metrics(before, 10.0), top.parse_metrics(after, 14.0))
    assert frame.elapsed == 4.0
    a, b = row(frame, "pod-a"), row(frame, "pod-b")
    assert a.values["syscalls"] == pytest.approx((60 + 20 + 8) / 4.0)
    assert a.values["csw"] == pytest.approx(500 / 4.0)
    assert b.values["syscalls"] == 0.0
    assert b.values["csw"] == 0.0  # family present, no series: nothing happened
    # families absent from the scrape: collector off, not zero
    assert a.values["tx"] is None and a.values["errors"] is None
    assert "TCP TX/s" in frame.missing and "SYSCALLS/s" not in frame.missing


def test_counter_reset_never_gives_a_negative_rate() -> None:
    before = exposition(syscalls={("team-a", "pod-a", "app", "read"): 5000})
    after = exposition(syscalls={("team-a", "pod-a", "app", "read"): 30})
    frame = top.compute_rows(top.parse_metrics(before, 0.0), top.parse_metrics(after, 2.0))
    assert row(frame, "pod-a").values["syscalls"] == pytest.approx(15.0)


def test_first_frame_has_no_rates_and_a_bad_clock_is_a_first_frame() -> None:
    text = exposition(syscalls={("team-a", "pod-a", "app", "read"): 5})
    frame = top.compute_rows(None, top.parse_metrics(text, 3.0))
    assert frame.elapsed is None and row(frame, "pod-a").values["syscalls"] is None
    same_time = top.compute_rows(top.parse_metrics(text, 3.0), top.parse_metrics(text, 3.0))
    assert same_time.elapsed is None and row(same_time, "pod-a").values["syscalls"] is None


def test_namespace_filter() -> None:
    text = exposition(pods=[("team-a", "pod-a"), ("team-b", "pod-b")])
    frame = top.compute_rows(None, top.parse_metrics(text, 0), namespace="team-b")
    assert [(r.namespace, r.pod) for r in frame.rows] == [("team-b", "pod-b")]


def test_oom_is_a_total_flagged_when_it_grows() -> None:
    before = exposition(oom={("team-a", "pod-a", "app"): 1, ("team-b", "pod-b", "app"): 2})
    after = exposition(oom={("team-a", "pod-a", "app"): 2, ("team-b", "pod-b", "app"): 2})
    frame = top.compute_rows(top.parse_metrics(before, 0), top.parse_metrics(after, 1))
    assert row(frame, "pod-a").values["oom"] == 2 and row(frame, "pod-a").oom_grew
    assert row(frame, "pod-b").values["oom"] == 2 and not row(frame, "pod-b").oom_grew


# ---- p99 ---------------------------------------------------------------------


def test_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [(0.1, 10.0), (0.2, 20.0), (math.inf, 20.0)]
    assert top.histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert top.histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert top.histogram_quantile(0.25, buckets) == pytest.approx(0.05)  # lowest bucket starts at 0
    # a rank in +Inf answers the highest finite bound
    assert top.histogram_quantile(0.99, [(0.1, 1.0), (math.inf, 100.0)]) == pytest.approx(0.1)
    assert top.histogram_quantile(0.99, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert top.histogram_quantile(0.99, []) is None
    assert top.histogram_quantile(0.99, [(0.1, 3.0)]) is None  # no +Inf: not a histogram


QUANTILE_CASES = [
    (0.99, [(1e-06, 3.0), (2e-06, 50.0), (4e-06, 98.0), (8e-06, 100.0), (math.inf, 100.0)]),
    (0.5, [(0.001, 0.0), (0.002, 0.0), (0.004, 7.0), (math.inf, 9.0)]),
    (0.99, [(0.25, 5.0), (0.5, 5.0), (1.0, 6.0), (math.inf, 1000.0)]),
    (0.9, [(1.0, 1.0), (2.0, 1.0), (4.0, 1.0), (math.inf, 1.0)]),
    (0.99, [(0.5, 10.0), (1.0, 8.0), (2.0, 20.0), (math.inf, 20.0)]),  # non-monotonic input
]


def test_quantile_matches_prometheus(tmp_path: Path) -> None:
    """Each case's answer is checked by Prometheus' own histogram_quantile (promtool)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing: apt-get install prometheus")
    series, exprs = [], []
    for i, (q, buckets) in enumerate(QUANTILE_CASES):
        ours = top.histogram_quantile(q, buckets)
        assert ours is not None
        for le, count in buckets:
            le_text = "+Inf" if math.isinf(le) else repr(le)
            series.append(f"      - series: 'h{i}_bucket{{le=\"{le_text}\"}}'\n        values: '{count}'")
        exprs.append(f"      - expr: abs(histogram_quantile({q}, h{i}_bucket) - {ours!r}) < bool 1e-12\n"
                     f"        eval_time: 0\n        exp_samples:\n          - labels: '{{}}'\n            value: 1")
    test_file = tmp_path / "quantiles.yaml"
    test_file.write_text("rule_files: []\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n"
                         "    input_series:\n" + "\n".join(series) + "\n    promql_expr_test:\n" + "\n".join(exprs)
                         + "\n")
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_p99_over_the_bucket_increase_and_totals_on_first_frame() -> None:
    # Before: 100 slow waits. Between scrapes: 100 fast ones only.
    before = {("team-a", "pod-a", "app"): [("1e-06", 0.0), ("0.001", 0.0), ("+Inf", 100.0)]}
    after = {("team-a", "pod-a", "app"): [("1e-06", 100.0), ("0.001", 100.0), ("+Inf", 200.0)]}
    first = top.parse_metrics(exposition(runq=before), 0.0)
    second = top.parse_metrics(exposition(runq=after), 2.0)
    assert row(top.compute_rows(first, second), "pod-a").values["runq"] == pytest.approx(0.99e-06)
    # first frame: over everything seen so far (rank 198 of 200 is in +Inf)
    assert row(top.compute_rows(None, second), "pod-a").values["runq"] == pytest.approx(0.001)


def test_p99_merges_containers_and_survives_a_reset() -> None:
    after = {("team-a", "pod-a", "app"): [("0.001", 50.0), ("0.002", 50.0), ("+Inf", 50.0)],
             ("team-a", "pod-a", "side"): [("0.001", 0.0), ("0.002", 50.0), ("+Inf", 50.0)]}
    frame = top.compute_rows(None, top.parse_metrics(exposition(runq=after), 0.0))
    # 100 waits, half in (0, 1ms], half in (1ms, 2ms]: rank 99 -> 1ms + 1ms * 49/50
    assert row(frame, "pod-a").values["runq"] == pytest.approx(0.001 + 0.001 * 49 / 50)
    reset_before = {("team-a", "pod-a", "app"): [("0.001", 500.0), ("0.002", 900.0), ("+Inf", 900.0)]}
    reset_after = {("team-a", "pod-a", "app"): [("0.001", 0.0), ("0.002", 10.0), ("+Inf", 10.0)]}
    frame = top.compute_rows(top.parse_metrics(exposition(runq=reset_before), 0),
                             top.parse_metrics(exposition(runq=reset_after), 1))
    # restarted agent: its buckets are the increase
    assert row(frame, "pod-a").values["runq"] == pytest.approx(0.001 + 0.001 * 9.9 / 10)


def test_p99_absent_when_nothing_waited() -> None:
    same = {("team-a", "pod-a", "app"): [("0.001", 5.0), ("+Inf", 5.0)]}
    frame = top.compute_rows(top.parse_metrics(exposition(runq=same), 0), top.parse_metrics(exposition(runq=same), 1))
    assert row(frame, "pod-a").values["runq"] is None


def test_merge_cumulative_with_different_bounds() -> None:
    merged = top.merge_cumulative([{0.1: 1.0, math.inf: 4.0}, {0.1: 2.0, 0.2: 3.0, math.inf: 3.0}])
    # the first has no 0.2 bound: its count there is its count at 0.1
    assert merged == [(0.1, 3.0), (0.2, 4.0), (math.inf, 7.0)]


# ---- formatting and sorting ---------------------------------------------------


@pytest.mark.parametrize(("value", "key", "text"), [
    (None, "syscalls", "-"), (0.0, "syscalls", "0"), (0.25, "syscalls", "0.25"), (3.14159, "syscalls", "3.14"),
    (504.5, "syscalls", "504"), (12345.0, "syscalls", "12.3k"), (999_960.0, "syscalls", "1.00M"),
    (2_500_000.0, "tx", "2.50MB"), (3.0, "oom", "3"), (0.0000123, "runq", "12.3µs"), (0.0015, "runq", "1.50ms"),
    (2.5e-9, "runq", "2.50ns"), (3.0, "runq", "3.00s"),
])
def test_format_value(value: float | None, key: str, text: str) -> None:
    assert top.format_value(value, top.COLUMN_BY_KEY[key]) == text


def test_sort_busiest_first_and_missing_last() -> None:
    rows = [top.PodRow("ns", "idle", {"syscalls": 0.0}), top.PodRow("ns", "off", {"syscalls": None}),
            top.PodRow("ns", "busy", {"syscalls": 90.0}), top.PodRow("ab", "mid", {"syscalls": 5.0})]
    assert [r.pod for r in top.sort_rows(rows, "syscalls")] == ["busy", "mid", "idle", "off"]
    assert [r.pod for r in top.sort_rows(rows, "syscalls", reverse=True)] == ["idle", "mid", "busy", "off"]
    assert [r.pod for r in top.sort_rows(rows, "namespace")] == ["mid", "busy", "idle", "off"]
    assert [r.pod for r in top.sort_rows(rows, "pod")] == ["busy", "idle", "mid", "off"]


def test_sort_names_accept_titles() -> None:
    assert top.resolve_sort("SYSCALLS/s") == "syscalls"
    assert top.resolve_sort("tcp tx") == "tx"
    assert top.resolve_sort("runq p99") == "runq"
    assert top.resolve_sort("OOM") == "oom"
    with pytest.raises(Exception, match="one of"):
        top.resolve_sort("cpu")


def test_keys_change_sort_and_quit() -> None:
    assert top.handle_key("s", "csw", False) == ("tx", False, False)
    assert top.handle_key("S", "namespace", False) == ("oom", False, False)
    assert top.handle_key("r", "csw", False) == ("csw", True, False)
    assert top.handle_key("8", "csw", False) == ("syscalls", False, False)
    assert top.handle_key("0", "csw", False) == ("oom", False, False)
    assert top.handle_key("q", "csw", False)[2]
    assert top.handle_key("x", "csw", True) == ("csw", True, False)


def render_text(frame: top.Frame, sort: str = "csw", limit: int | None = None) -> str:
    console = Console(width=160, no_color=True, force_terminal=False)
    with console.capture() as capture:
        console.print(top.render(frame, "http://h:9090/metrics", sort, limit=limit))
    return capture.get()


def table_rows(text: str) -> dict[str, list[str]]:
    """pod -> cells of its line, from the rendered table."""
    found = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) == len(top.COLUMNS) and not line.startswith("NAMESPACE"):
            found[cells[1]] = cells
    return found


def test_render_shows_one_line_per_pod_in_sort_order() -> None:
    before = exposition(syscalls={("team-a", "pod-a", "app", "read"): 0, ("team-b", "pod-b", "app", "read"): 0},
                        csw={("team-a", "pod-a", "app"): 0})
    after = exposition(syscalls={("team-a", "pod-a", "app", "read"): 10, ("team-b", "pod-b", "app", "read"): 5000},
                       csw={("team-a", "pod-a", "app"): 40})
    frame = top.compute_rows(top.parse_metrics(before, 0), top.parse_metrics(after, 2))
    text = render_text(frame, sort="syscalls")
    assert "rates over 2.000 s" in text and "node node-1" in text and "2 pods" in text
    rows = table_rows(text)
    assert rows["pod-a"][:4] == ["team-a", "pod-a", "-", "20.0"]
    assert rows["pod-b"][7] == "2.50k" and rows["pod-a"][7] == "5.00"
    assert text.index("pod-b") < text.index("pod-a")
    assert "collector off for" in text and "TCP TX/s" in text
    limited = render_text(frame, sort="syscalls", limit=1)
    assert "pod-a" not in limited and "1 more pods not shown" in limited


# ---- the command against a served page -----------------------------------------


class Pages(ThreadingHTTPServer):
    """Serves the given /metrics texts in turn, the last one forever."""

    def __init__(self, pages: list[str]) -> None:
        self.pages = list(pages)
        self.served = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:  # noqa: N802, N805
                if handler.path != "/metrics":
                    handler.send_error(404)
                    return
                body = self.pages[min(self.served, len(self.pages) - 1)].encode()
                self.served += 1
                handler.send_response(200)
                handler.send_header("Content-Type", "text/plain; version=0.0.4")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def pages() -> Iterator[Pages]:
    servers: list[Pages] = []

    def make(texts: list[str]) -> Pages:
        server = Pages(texts)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield make  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_once_prints_rates_over_the_measured_interval(pages, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    server = pages([exposition(syscalls={("team-a", "pod-a", "app", "read"): 100}, pods=[("team-b", "pod-b")]),
                    exposition(syscalls={("team-a", "pod-a", "app", "read"): 400}, pods=[("team-b", "pod-b")])])
    assert top.main(["--once", "--no-color", "--interval", "0.3", "--url", server.url.removeprefix("http://"),
                     "--sort", "syscalls"]) == 0
    out = capsys.readouterr().out
    elapsed = float(re.search(r"rates over (\d+\.\d+) s", out).group(1))  # type: ignore[union-attr]
    assert elapsed >= 0.3
    rows = table_rows(out)
    # 300 calls over the measured time, to the precision printed
    assert_shown(rows["pod-a"][7], 300 / elapsed, elapsed)
    assert rows["pod-b"][7] == "0"


def test_unreachable_agent_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert top.main(["--once", "--url", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach http://127.0.0.1:{port}/metrics" in err
    assert "is kpod-agent running?" in err and "sudo make run" in err


def test_not_an_agent_is_reported(pages, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    server = pages(["<html>hello</html>\n"])
    assert top.main(["--once", "--interval", "0.01", "--url", server.url]) == 1
    assert "did not answer Prometheus text" in capsys.readouterr().err
    assert top.main(["--once", "--interval", "0.01", "--url", server.url + "/nope"]) == 1
    assert "answered HTTP 404" in capsys.readouterr().err


def test_metrics_url_forms() -> None:
    assert top.metrics_url("127.0.0.1:9090") == "http://127.0.0.1:9090/metrics"
    assert top.metrics_url("http://h:1/") == "http://h:1/metrics"
    assert top.metrics_url("https://h/custom/path") == "https://h/custom/path"
    with pytest.raises(ValueError):
        top.metrics_url("ftp://h:1")


def test_cli_error_has_no_traceback() -> None:
    """Through the real entry point, as a user types it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "kpod_agent.main", "top", "--once", "--url", f"127.0.0.1:{port}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "kpod-agent top: cannot reach" in result.stderr
    assert "Traceback" not in result.stderr


def test_interval_follows_the_agents_collection() -> None:
    status = {"collectors": {"cpu": {"attached": True, "interval": 5.0}, "syscall": {"attached": True, "interval": 15},
                             "diskIO": {"attached": True, "interval": 60.0},  # not a column of top
                             "network": {"attached": False, "error": "boom"}}}
    assert top.collection_interval(status) == 15
    assert top.collection_interval({"collectors": "garbage"}) is None
    assert top.collection_interval([1, 2]) is None
    assert top.choose_interval(None, 15.0) == (15.0, None)
    assert top.choose_interval(None, 0.5) == (top.DEFAULT_INTERVAL, None)
    assert top.choose_interval(None, None) == (top.DEFAULT_INTERVAL, None)
    assert top.choose_interval(20.0, 15.0) == (20.0, None)
    interval, note = top.choose_interval(1.0, 15.0)
    assert interval == 1.0 and note is not None and "--interval 15" in note


def test_config_url_is_beside_metrics() -> None:
    assert top.config_url("http://h:9090/metrics") == "http://h:9090/config"


def test_odd_samples_are_dropped_not_fatal() -> None:
    runq = exposition(runq={("team-a", "pod-a", "app"): [("0.001", 1.0), ("+Inf", 2.0)]})
    bad_bucket = f'kpod_cpu_runqueue_latency_seconds_bucket{labels(c="side", le="soon")} 3.0\n'
    text = (runq.replace("# HELP kpod_container_restarts", bad_bucket + "# HELP kpod_container_restarts")
            + "# HELP kpod_syscall_count_total Calls.\n# TYPE kpod_syscall_count_total counter\n"
            + f"kpod_syscall_count_total{labels(syscall='read')} NaN\n"
            + "# HELP kpod_cpu_context_switches_total S.\n# TYPE kpod_cpu_context_switches_total counter\n"
            + f"kpod_cpu_context_switches_total{labels()} -4\n")
    scrape = top.parse_metrics(text, 1.0)
    assert not [k for k in scrape.samples if dict(k[1]).get("le") == "soon"]
    pod_a = row(top.compute_rows(top.parse_metrics(text, 0.0), scrape), "pod-a")
    assert pod_a.values["syscalls"] == 0.0 and pod_a.values["csw"] == 0.0
    # first frame: p99 over the totals of the one good histogram
    assert row(top.compute_rows(None, scrape), "pod-a").values["runq"] == pytest.approx(0.001)


def test_stream_keeps_the_last_good_frame_through_a_bad_scrape(  # type: ignore[no-untyped-def]
        pages, capsys: pytest.CaptureFixture[str]) -> None:
    def page(calls: int) -> str:
        return exposition(syscalls={("team-a", "pod-a", "app", "read"): calls})

    server = pages([page(0), page(100), "garbage {{{\n", page(700)])
    # stdout is not a terminal here: frames are printed one after another
    assert top.main(["--count", "4", "--interval", "0.2", "--no-color", "--url", server.url]) == 0
    frames = capsys.readouterr().out.split("kpod top ")[1:]
    assert len(frames) == 4
    assert "first scrape, rates in 0.2 s" in frames[0] and table_rows(frames[0])["pod-a"][7] == "-"
    elapsed = [float(m.group(1)) for f in frames[1:] if (m := re.search(r"rates over (\d+\.\d+) s", f))]
    assert_shown(table_rows(frames[1])["pod-a"][7], 100 / elapsed[0], elapsed[0])
    # the failed scrape: its error shown above the previous numbers, unchanged
    assert "did not answer Prometheus text" in frames[2]
    assert table_rows(frames[2])["pod-a"] == table_rows(frames[1])["pod-a"]
    # recovered: the increase since the last good scrape, over the time since it
    assert "did not answer" not in frames[3]
    assert elapsed[2] >= 0.4  # two intervals: the bad scrape is skipped
    assert_shown(table_rows(frames[3])["pod-a"][7], 600 / elapsed[2], elapsed[2])


@pytest.mark.parametrize("args", [["--interval", "0"], ["--interval", "-1"], ["--interval", "soon"],
                                  ["--limit", "0"], ["--count", "-2"], ["--sort", "cpu"]])
def test_bad_options_are_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        top.main(args)
    assert exit_.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("width", [80, 100, 132, 200])
def test_every_number_fits_the_terminal(width: int) -> None:
    long_pod = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abcdef.scope"
    rows = [top.PodRow("kube-system-with-a-long-name", long_pod,
                       {c.key: 123456.0 for c in top.COLUMNS[2:]} | {"runq": 0.0123}),
            top.PodRow("team-a", "web-0", {c.key: 0.0 for c in top.COLUMNS[2:]})]
    frame = top.Frame(rows=rows, elapsed=2.0, nodes=frozenset({"node-1"}))
    console = Console(width=width, no_color=True, force_terminal=False)
    with console.capture() as capture:
        console.print(top.render(frame, "http://h:9090/metrics", "csw", width=width))
    lines = capture.get().splitlines()
    assert all(len(line.rstrip()) <= width for line in lines), "\n".join(lines)
    header = next(line for line in lines if "POD" in line).split()
    full = [w for c in top.COLUMNS for w in c.title.split()]
    short = [c.short for c in top.COLUMNS]
    shown = [t for t in header if t != "▼"]
    assert shown == full if width >= 160 else shown in (full, short)
    assert shown == short if width <= 80 else True
    busy = next(line for line in lines if "123k" in line).split()
    assert busy[-8:] == ["12.3ms", "123k", "123kB", "123kB", "123k", "123k", "123k", "123456"]
    assert busy[1].endswith("f.scope") and "…" in busy[1]  # the distinctive end of the name is kept


def test_a_pod_first_seen_has_no_rate_yet() -> None:
    before = exposition(syscalls={("team-a", "pod-a", "app", "read"): 10})
    after = exposition(syscalls={("team-a", "pod-a", "app", "read"): 20, ("team-a", "new", "app", "read"): 9000},
                       runq={("team-a", "new", "app"): [("0.001", 1.0), ("+Inf", 1.0)]})
    frame = top.compute_rows(top.parse_metrics(before, 0), top.parse_metrics(after, 1))
    assert row(frame, "pod-a").values["syscalls"] == 10.0
    assert row(frame, "new").values["syscalls"] is None
    assert row(frame, "new").values["runq"] == pytest.approx(0.00099)  # over its totals, as on a first frame


def test_scrapes_from_different_agents_are_flagged() -> None:
    a = top.parse_metrics(exposition(syscalls={("team-a", "pod-a", "app", "read"): 5}), 0)
    b = top.parse_metrics(exposition(syscalls={("team-b", "pod-b", "app", "read"): 80000})
                          .replace('node="node-1"', 'node="node-2"'), 1)
    frame = top.compute_rows(a, b)
    assert frame.nodes_switched and frame.nodes == {"node-2"}
    assert row(frame, "pod-b").values["syscalls"] is None  # not 80000/s
    text = render_text(frame)
    assert "different nodes" in text and "port-forward" in text
    assert not top.compute_rows(a, dataclasses.replace(a, at=1)).nodes_switched


def test_an_answer_cut_short_is_a_scrape_error() -> None:
    """An agent restarting or a port-forward dropping mid-answer."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nContent-Type: text/plain\r\n\r\n# HELP x")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/metrics"
    try:
        with pytest.raises(top.ScrapeError, match="cannot reach .*IncompleteRead"):
            top.scrape(url, timeout=5)
        assert top.fetch_collection_interval(url, timeout=5) is None
    finally:
        thread.join(timeout=5)
        listener.close()
