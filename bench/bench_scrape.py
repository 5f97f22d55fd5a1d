"""Scrapes at node scale: /metrics of an agent with thousands of fake pods.

The agent runs in a child process: the real Agent, exporter, HTTP server and
collection loop over fake pods (tests/support/fake_pods.py: the real
collectors' metric specs over synthetic snapshots, 3 cgroups per pod, no
kernel). Two children over the same pods, in the same run:

  baseline  every request renders through prometheus_client's encoders
            (what each scrape cost before the cache)
  cached    the exporter's cache: rendered once per collection, the same
            bytes (text, OpenMetrics, gzip) to every scraper

Measured for each: one scrape in each format (median of 5, after a first
that may render), 20 scrapers in parallel asking as Prometheus does
(OpenMetrics, gzip) for `--seconds`, and the child's RSS before and at its
peak. Ratios are cached / baseline. No root needed.

    .venv/bin/python -m bench.bench_scrape [--pods 5000] [--parallel 20] [--seconds 20]
"""
from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import threading
import time

from bench.common import ROOT, rss_mb, table

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
FORMATS = {
    "text": {},
    "OpenMetrics": {"Accept": PROMETHEUS_ACCEPT},
    "OpenMetrics + gzip": {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"},
}
GOALS = {"one scrape (s)": 0.2, "parallel p99 (s)": 1.0, "RSS growth (MB)": 50.0}


def serve(mode: str, pods: int) -> None:
    """Child: the fake agent behind the real server until stdin closes."""
    from prometheus_client import CollectorRegistry

    from kpod_agent import main
    from kpod_agent.exporter import KpodCollector
    from kpod_agent.server import AgentHTTPServer
    from tests.support.fake_pods import fake_agent

    agent = fake_agent(pods)
    exporter = KpodCollector(agent)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    if mode == "cached":
        server = AgentHTTPServer(("127.0.0.1", 0), agent, registry, metrics=exporter.exposition)
        after_cycle = exporter.prewarm
    else:
        server = AgentHTTPServer(("127.0.0.1", 0), agent, registry)
        after_cycle = None
    server.start()
    stop = threading.Event()
    threading.Thread(target=main._collection_loop, args=(agent, stop, after_cycle), daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()  # the parent closes it when done
    stop.set()
    server.shutdown()


def scrape(port: int, headers: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", "/metrics", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, resp.status
    finally:
        conn.close()
    return time.perf_counter() - started, len(body)


def measure(mode: str, pods: int, parallel: int, seconds: float) -> dict[str, float]:
    child = subprocess.Popen([sys.executable, "-m", "bench.bench_scrape", "--serve", mode, "--pods", str(pods)],
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        time.sleep(2.0)
        result: dict[str, float] = {"RSS before (MB)": rss_mb(child.pid)}
        peak = [result["RSS before (MB)"]]
        for name, headers in FORMATS.items():
            first, size = scrape(port, headers)
            times = [scrape(port, headers)[0] for _ in range(5)]
            result[f"{name}: first scrape (s)"] = first
            result[f"{name}: one scrape (s)"] = statistics.median(times)
            result[f"{name}: bytes"] = size
            peak.append(rss_mb(child.pid))
        result["RSS after single scrapes (MB)"] = rss_mb(child.pid)
        latencies: list[float] = []
        until = time.monotonic() + seconds

        def scraper() -> None:
            while time.monotonic() < until:
                latencies.append(scrape(port, FORMATS["OpenMetrics + gzip"])[0])

        threads = [threading.Thread(target=scraper) for _ in range(parallel)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak.append(rss_mb(child.pid))
            time.sleep(0.2)
        latencies.sort()
        result["parallel scrapes"] = len(latencies)
        result["parallel p50 (s)"] = latencies[len(latencies) // 2]
        result["parallel p99 (s)"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        result["RSS peak (MB)"] = max(peak)
        result["RSS growth (MB)"] = max(peak) - result["RSS before (MB)"]
        return result
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--parallel", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--serve", choices=["baseline", "cached"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.pods)
        return 0
    base = measure("baseline", args.pods, args.parallel, args.seconds)
    ours = measure("cached", args.pods, args.parallel, args.seconds)
    rows = [("measure", "baseline", "cached", "cached / baseline")]
    for key in base:
        b, c = base[key], ours[key]
        ratio = f"{c / b:.3f}" if b else "-"
        fmt = "{:.0f}" if key.endswith(("bytes", "scrapes")) else "{:.3f}" if "(s)" in key else "{:.1f}"
        rows.append((key, fmt.format(b), fmt.format(c), ratio))
    table(f"/metrics with {args.pods} fake pods ({3 * args.pods} cgroups), {args.parallel} parallel "
          f"scrapers for {args.seconds:.0f} s (this machine: {os.cpu_count()} cores)", rows)
    worst_one = max(v for k, v in ours.items() if k.endswith(": one scrape (s)"))
    checks = [("one scrape (s)", worst_one), ("parallel p99 (s)", ours["parallel p99 (s)"]),
              ("RSS growth (MB)", ours["RSS growth (MB)"])]
    table("Goals (cached)", [("goal", "limit", "measured", "met"),
                             *((k, f"{GOALS[k]:g}", f"{v:.3f}", "yes" if v <= GOALS[k] else "NO") for k, v in checks)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
