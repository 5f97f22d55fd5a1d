"""Agent RSS per profile and /metrics cost with 500 fake pods.

RSS: the real `kpod-agent` process in standalone mode (discovery none) with
each profile, after its collectors are attached; baseline: the same Python
with the agent's modules imported and nothing loaded.
/metrics: 500 kubelet-style pods, each running a workload so that every
collector has series for it; time to render a scrape (the agent's direct
text renderer), against a baseline of prometheus_client serializing the
same families already built, and the whole scrape through prometheus_client.
    sudo .venv/bin/python -m bench.bench_agent [--pods N] [--profiles standard,comprehensive]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from bench.common import require_root, rss_mb, table
from tests.bpf.test_agent_cli import _free_port


def agent_rss(profile: str, tmp: Path) -> tuple[float, float]:
    path = tmp / f"{profile}.yaml"
    path.write_text(yaml.safe_dump({"profile": profile, "discovery": {"mode": "none"},
                                    "collectors": {"syscall": {"enabled": profile == "comprehensive"}}}))
    port = _free_port()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "kpod_agent.main", "--config", str(path),
                             "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - started > 120:
                raise RuntimeError("agent did not become ready")
            time.sleep(0.2)
        ready = time.monotonic() - started
        time.sleep(3)  # a few collection cycles
        return rss_mb(proc.pid), ready
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def baseline_rss() -> float:
    proc = subprocess.Popen([sys.executable, "-c",
                             "import kpod_agent.agent, kpod_agent.exporter, bcc, time; time.sleep(30)"])
    time.sleep(4)
    try:
        return rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def metrics_cost(pods: int, tmp: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    from kpod_agent.agent import Agent
    from kpod_agent.exporter import KpodCollector
    from tests.support.kernel_node import KernelNode

    node = KernelNode(tmp)
    agent = Agent(node_name="bench")
    try:
        fake = [node.add_pod(f"bench-{i}", f"ns-{i % 10}", labels={"app": f"a{i % 7}"}) for i in range(pods)]
        agent.apply(node.config(profile="comprehensive", syscalls=["getppid", "close"], includeLabels=["app"]))
        agent.on_index(agent.discovery.refresh())
        for pod in fake:
            pod.workload("getppid", 3)
        agent.collect_due(force=True)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(KpodCollector(agent))
        families = list(registry.collect())

        class Frozen(Collector):
            def collect(self):  # type: ignore[no-untyped-def]
                return iter(families)

        frozen = CollectorRegistry(auto_describe=False)
        frozen.register(Frozen())
        exporter = KpodCollector(agent)
        ours, library, base = [], [], []
        for _ in range(7):
            t = time.perf_counter()
            text = exporter.render_text()
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            generate_latest(registry)
            library.append(time.perf_counter() - t)
            t = time.perf_counter()
            generate_latest(frozen)
            base.append(time.perf_counter() - t)
        lines = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
        per_pod = [s for s in families if s.name.startswith("kpod_") and s.samples]
        per_line = statistics.median(ours) / lines * 1e6
        table(f"/metrics with {pods} pods (comprehensive profile)", [
            ("measure", "value"),
            ("sample lines", str(lines)),
            ("size", f"{len(text) / 1024:.0f} KiB"),
            ("scrape (median of 7)", f"{statistics.median(ours) * 1000:.1f} ms"),
            ("per sample line", f"{per_line:.2f} us (target <= 3 us)"),
            ("baseline: serializing prebuilt families", f"{statistics.median(base) * 1000:.1f} ms"),
            ("scrape / baseline", f"{statistics.median(ours) / statistics.median(base):.2f}x"),
            ("same scrape through prometheus_client families",
             f"{statistics.median(library) * 1000:.1f} ms ({statistics.median(library) / lines * 1e6:.2f} us/line)"),
            ("families with samples", str(len(per_pod))),
        ])
    finally:
        agent.shutdown()
        node.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--profiles", default="minimal,standard,comprehensive")
    args = parser.parse_args()
    require_root()
    tmp = Path(tempfile.mkdtemp())
    base = baseline_rss()
    rows = [("profile", "RSS MB", "vs bare imports", "ready after")]
    rows.append(("(bare imports, no probes)", f"{base:.0f}", "1.00x", "-"))
    for profile in args.profiles.split(","):
        rss, ready = agent_rss(profile, tmp)
        rows.append((profile, f"{rss:.0f}", f"{rss / base:.2f}x", f"{ready:.1f} s"))
    table("Agent RSS (standalone, discovery none)", rows)
    print("targets: standard <= 150 MB, comprehensive <= 200 MB")
    metrics_cost(args.pods, tmp)


if __name__ == "__main__":
    main()
