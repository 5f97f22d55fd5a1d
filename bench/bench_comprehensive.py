"""The comprehensive profile: what it costs the workloads, the agent's memory,
/metrics with many pods, and series per pod for each profile.

In one run, against baselines measured in the same run:
  syscalls    ns per call of getppid (allowlisted) and getuid (not) in a fake
              pod, with nothing attached vs. every collector attached;
              rounds alternate so drift hits both alike.
  workloads   wall time of fork+exec, fsync'd writes and TCP transfers in the
              pod, nothing attached vs. comprehensive.
  RSS         the real kpod-agent process with the comprehensive profile, vs.
              the same Python with the agent's modules and bcc imported.
  /metrics    N kubelet-style pods that each ran a workload: scrape time,
              size, time per exposed sample line (target <= 3 us).
  series      one pod with every kind of activity (its own netns and mount,
              TCP, disk, execs): series carrying its pod label, per profile,
              next to the reference's estimate (~20 / ~39 / ~69).
    sudo .venv/bin/python -m bench.bench_comprehensive [--pods 500] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import build, require_root, table

GETPPID, GETUID = 110, 102
REFERENCE_SERIES = {"minimal": 20, "standard": 39, "comprehensive": 69}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- cost to workloads -----------------------------------------------------------

def workload_costs(node, rounds: int, calls: int) -> None:  # type: ignore[no-untyped-def]
    from kpod_agent.agent import Agent

    loop = build("syscall_loop")
    pod = node.add_pod("cost", "bench")
    disk = Path(tempfile.mkdtemp(prefix="kpod-bench-disk-", dir="/var/tmp"))
    port_holder: list[int] = []

    def tcp_transfer() -> None:
        port = _free_port()
        server = pod.spawn([str(node.workload), "recv", str(port), str(8 << 20)], stdout=subprocess.PIPE)
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        pod.workload("send", "127.0.0.1", port, 8 << 20)
        server.communicate(timeout=60)
        port_holder.append(port)

    jobs: dict[str, Callable[[], object]] = {
        "getppid (allowlisted) ns/call": lambda: float(pod.run([str(loop), str(GETPPID), str(calls), "5"]).stdout),
        "getuid (not allowlisted) ns/call": lambda: float(pod.run([str(loop), str(GETUID), str(calls), "5"]).stdout),
        "200 fork+exec, ms": lambda: _timed(lambda: pod.workload("exec", 200)),
        "32 MiB write+fsync, ms": lambda: _timed(lambda: pod.workload("write", disk / "w.bin", 32, 1)),
        "8 MiB over loopback TCP, ms": lambda: _timed(tcp_transfer),
    }
    results: dict[tuple[str, str], list[float]] = {}
    agent = Agent(node_name="bench")
    config = node.config(profile="comprehensive", syscalls=["read", "write", "close", "getppid"])
    try:
        for _ in range(rounds):
            for condition in ("none", "comprehensive"):
                if condition == "comprehensive":
                    agent.apply(config)
                    agent.on_index(agent.discovery.refresh())
                    failed = {n: s.error for n, s in agent.states.items() if s.collector is None}
                    if failed:
                        sys.exit(f"collectors failed to attach: {failed}")
                for name, job in jobs.items():
                    results.setdefault((condition, name), []).append(float(job()))  # type: ignore[arg-type]
                if condition == "comprehensive":
                    agent.collect_due(force=True)
                    agent.apply(node.config(collectors={}))
    finally:
        agent.shutdown()
        shutil.rmtree(disk, ignore_errors=True)
    rows = [("workload (median of rounds)", "nothing attached", "comprehensive", "ratio")]
    for name in jobs:
        base = statistics.median(results[("none", name)])
        full = statistics.median(results[("comprehensive", name)])
        rows.append((name, f"{base:.1f}", f"{full:.1f}", f"{full / base:.2f}x"))
    table(f"Cost to workloads in a pod ({rounds} alternating rounds)", rows)


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


# ---- agent RSS -------------------------------------------------------------------

def agent_rss(tmp: Path) -> None:
    from bench.bench_agent import agent_rss as profile_rss
    from bench.bench_agent import baseline_rss

    rss, ready = profile_rss("comprehensive", tmp)
    bare = baseline_rss()
    table("Agent RSS with the comprehensive profile (standalone, every collector attached)", [
        ("process", "RSS MB", "ratio"),
        ("python + agent modules + bcc imported", f"{bare:.0f}", "1.00x"),
        ("kpod-agent, comprehensive", f"{rss:.0f} (target <= 200)", f"{rss / bare:.2f}x"),
        ("ready after", f"{ready:.1f} s", ""),
    ])


# ---- /metrics with many pods -----------------------------------------------------------

def metrics_cost(node, pods: int, tmp: Path) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    from kpod_agent.agent import Agent
    from kpod_agent.exporter import KpodCollector

    agent = Agent(node_name="bench")
    try:
        fake = [node.add_pod(f"m-{i}", f"ns-{i % 10}", labels={"app": f"a{i % 7}"}) for i in range(pods)]
        agent.apply(node.config(profile="comprehensive", syscalls=["getppid", "close", "write"],
                                includeLabels=["app"]))
        agent.on_index(agent.discovery.refresh())
        started = time.monotonic()
        for i, pod in enumerate(fake):
            pod.workload("exec", 1)
            if i % 5 == 0:
                pod.workload("write", tmp / f"m{i}.bin", 1, 1)
        spent = time.monotonic() - started
        agent.collect_due(force=True)
        agent.collect_due(force=True)  # the second read is the steady state
        reads = sorted(((n, s.duration) for n, s in agent.states.items()), key=lambda x: -x[1])
        table(f"Collector read time with {pods} pods (one collection cycle)",
              [("collector", "ms"), *((n, f"{d * 1000:.1f}") for n, d in reads),
               ("whole cycle", f"{agent.cycle_duration * 1000:.1f}")])
        registry = CollectorRegistry(auto_describe=False)
        registry.register(KpodCollector(agent))
        families = list(registry.collect())

        class Frozen(Collector):
            def collect(self):  # type: ignore[no-untyped-def]
                return iter(families)

        frozen = CollectorRegistry(auto_describe=False)
        frozen.register(Frozen())
        exporter = KpodCollector(agent)
        render = getattr(exporter, "render_text", None) or (lambda: generate_latest(registry))
        ours, library, base = [], [], []
        text = b""
        for _ in range(5):
            t = time.perf_counter()
            text = render()
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            generate_latest(registry)
            library.append(time.perf_counter() - t)
            t = time.perf_counter()
            generate_latest(frozen)
            base.append(time.perf_counter() - t)
        lines = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
        with_pods = {s.labels.get("pod") for f in families for s in f.samples if "pod" in s.labels}
        table(f"/metrics with {pods} pods, comprehensive (workloads took {spent:.0f} s)", [
            ("measure", "value"),
            ("pods with series", str(len(with_pods & {p.name for p in fake}))),
            ("sample lines", str(lines)),
            ("size", f"{len(text) / 1024:.0f} KiB"),
            ("scrape, agent renderer (median of 5)", f"{statistics.median(ours) * 1000:.1f} ms"),
            ("per sample line", f"{statistics.median(ours) / lines * 1e6:.2f} us (target <= 3 us)"),
            ("baseline: prometheus_client serializing prebuilt families",
             f"{statistics.median(base) * 1000:.1f} ms"),
            ("scrape / baseline", f"{statistics.median(ours) / statistics.median(base):.2f}x"),
            ("whole scrape through prometheus_client", f"{statistics.median(library) * 1000:.1f} ms"),
        ])
    finally:
        agent.shutdown()


# ---- series per pod per profile ------------------------------------------------------------

def series_per_pod(node, tmp: Path) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    """A pod in its own netns (veth) and mount namespace (a writable bind
    mount), with TCP traffic, fsync'd writes, execs, getppid; counted with
    each profile. Returns profile -> (sample lines, metric series with a
    histogram counted once)."""
    from prometheus_client import CollectorRegistry

    from kpod_agent.agent import Agent
    from kpod_agent.exporter import KpodCollector

    pod = node.add_pod("full", "cardinality")
    peer = node.add_pod("peer", "cardinality")
    tag = str(os.getpid() % 10000)
    ns, host_if, ns_if = f"kpodb{tag}", f"kbh{tag}", f"kbn{tag}"
    octet = os.getpid() % 250 + 1
    ip = ["ip"]
    subprocess.run([*ip, "netns", "add", ns], check=True)
    (tmp / "src").mkdir(exist_ok=True)
    (tmp / "vol").mkdir(exist_ok=True)
    holders = []
    results: dict[str, tuple[int, int]] = {}
    try:
        for args in (["link", "add", host_if, "type", "veth", "peer", "name", ns_if],
                     ["link", "set", ns_if, "netns", ns],
                     ["addr", "add", f"10.214.{octet}.1/30", "dev", host_if], ["link", "set", host_if, "up"],
                     ["-n", ns, "addr", "add", f"10.214.{octet}.2/30", "dev", ns_if],
                     ["-n", ns, "link", "set", ns_if, "up"], ["-n", ns, "link", "set", "lo", "up"]):
            subprocess.run([*ip, *args], check=True)
        script = f"mount --bind {tmp / 'src'} {tmp / 'vol'} && echo ready && exec sleep 3600"
        holder = pod.spawn(["ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private",
                            "sh", "-c", script], stdout=subprocess.PIPE)
        holders.append(holder)
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        for profile in ("minimal", "standard", "comprehensive"):
            agent = Agent(node_name="bench")
            try:
                agent.apply(node.config(profile=profile, syscalls=["getppid", "close", "write", "read"]))
                agent.on_index(agent.discovery.refresh())
                agent.collect_due(force=True)
                port = _free_port()
                server = peer.spawn([str(node.workload), "recv", str(port), str(1 << 20)], stdout=subprocess.PIPE)
                assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
                pod.workload("send", "127.0.0.1", port, 1 << 20)
                server.communicate(timeout=30)
                pod.workload("refused", "127.0.0.1", _free_port(), 1)
                pod.workload("write", tmp / "card.bin", 2, 1)
                pod.workload("read", tmp / "card.bin")
                pod.workload("exec", 2)
                pod.workload("getppid", 5)
                pod.workload("badclose", 5)
                pod.workload("sleep", 5, 1000)
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(b"x", (f"10.214.{octet}.2", 9))
                time.sleep(0.2)
                agent.collect_due(force=True)
                registry = CollectorRegistry(auto_describe=False)
                registry.register(KpodCollector(agent))
                samples = 0
                per_family: dict[str, int] = {}
                series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
                for family in registry.collect():
                    for s in family.samples:
                        if s.labels.get("pod") != pod.name:
                            continue
                        samples += 1
                        key = f"{family.name} [{s.labels.get('container')}]"
                        per_family[key] = per_family.get(key, 0) + 1
                        labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                        series.add((family.name, labels))
                results[profile] = (samples, len(series))
                if profile == "comprehensive":
                    table("Sample lines of the pod per family [container], comprehensive",
                          [("family [container]", "lines"), *sorted((k, str(v)) for k, v in per_family.items())])
            finally:
                agent.shutdown()
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
        subprocess.run([*ip, "link", "del", host_if], capture_output=True)
        subprocess.run([*ip, "netns", "del", ns], capture_output=True)
    rows = [("profile", "sample lines per pod", "series per pod (histogram = 1)", "reference estimate")]
    for profile, (samples, series_count) in results.items():
        rows.append((profile, str(samples), str(series_count), f"~{REFERENCE_SERIES[profile]}"))
    table("Series per pod, one container with every kind of activity", rows)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--only", default="costs,rss,metrics,series")
    args = parser.parse_args()
    require_root()
    from tests.support.kernel_node import KernelNode

    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="kpod-bench-", dir="/var/tmp"))
    node = KernelNode(tmp)
    try:
        if "series" in only:
            series_per_pod(node, tmp)
        if "costs" in only:
            workload_costs(node, args.rounds, args.calls)
        if "rss" in only:
            agent_rss(tmp)
        if "metrics" in only:
            metrics_cost(node, args.pods, tmp)
    finally:
        node.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
