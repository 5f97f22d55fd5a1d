"""Agent RSS at rest with many pods on the node: what the memory limit is set from.

The real `kpod-agent` process, kubelet discovery of N fake pods (real kubelet-
style cgroup directories in every hierarchy, listed by a fake kubelet over
HTTP), the standard and the comprehensive profile. Measured once discovery
has resolved every pod and after two /metrics scrapes (the exporter's peak),
then idle for a few collection cycles. Baseline: the same Python with the
agent's modules and bcc imported and nothing loaded, in the same run.

    sudo .venv/bin/python -m bench.bench_agent_pods [--pods 5000] [--profiles standard,comprehensive]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.bench_agent import baseline_rss
from bench.common import require_root, rss_mb, table
from tests.support.kernel_node import KernelNode
from tests.support.running_agent import RunningAgent

HEADROOM = 1.2  # the limit: the highest RSS seen here, plus 20 %


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(node: KernelNode, profile: str, pods: int, tmp: Path) -> tuple[float, float, float, float]:
    """(ready seconds, RSS at rest MB, RSS after scrapes MB, peak RSS MB)."""
    started = time.monotonic()
    agent = RunningAgent(node, tmp)
    agent.write(1, profile=profile, discovery={"interval": "10s"})
    agent.start(ready_timeout=600)  # compiling every collector on a busy machine
    try:
        agent.wait(lambda: agent.metric("kpod_discovery_pods") >= pods, f"{pods} pods discovered", 300)
        ready = time.monotonic() - started
        time.sleep(5)
        at_rest = rss_mb(agent.proc.pid)
        for _ in range(2):
            with urllib.request.urlopen(f"{agent.url}/metrics", timeout=60) as resp:
                resp.read()
        time.sleep(5)
        return ready, at_rest, rss_mb(agent.proc.pid), peak_rss_mb(agent.proc.pid)
    finally:
        agent.proc.kill()
        agent.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--profiles", default="standard,comprehensive")
    args = parser.parse_args()
    require_root()
    tmp = Path(tempfile.mkdtemp(prefix="kpod-bench-pods-"))
    node = KernelNode(tmp)
    try:
        started = time.monotonic()
        for i in range(args.pods):
            node.add_pod(f"pod-{i}", f"ns-{i % 50}", labels={"app": f"app-{i % 200}"})
        print(f"{args.pods} fake pods made in {time.monotonic() - started:.0f} s")
        base = baseline_rss()
        rows = [("profile", "ready after", "RSS at rest MB", "after scrapes MB", "peak MB", "vs bare imports")]
        rows.append(("(bare imports, no probes)", "-", f"{base:.0f}", "-", "-", "1.00x"))
        highest = 0.0
        for profile in args.profiles.split(","):
            (tmp / profile).mkdir()
            ready, rest, scraped, peak = measure(node, profile, args.pods, tmp / profile)
            highest = max(highest, peak)
            rows.append((profile, f"{ready:.0f} s", f"{rest:.0f}", f"{scraped:.0f}", f"{peak:.0f}",
                         f"{rest / base:.2f}x"))
        table(f"Agent RSS with {args.pods} pods (kubelet discovery)", rows)
        print(f"memory limit with {HEADROOM:.0%} of the peak: {highest * HEADROOM:.0f} MB")
    finally:
        node.close()


if __name__ == "__main__":
    main()
