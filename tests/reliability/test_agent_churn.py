"""2,000 pods churned (created, worked, deleted, 200 at a time) through the
real `kpod-agent` command: exact counts for every pod, no series of deleted
pods, BPF map entries back at their baseline, and the agent's RSS bounded
(figures printed, and in README.md)."""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.kernel_node import KernelNode
from tests.support.procfs import rss_kib
from tests.support.running_agent import RunningAgent, running_agent

pytestmark = pytest.mark.kernel

# ---- churn ------------------------------------------------------------------------

CHURN_PODS = 2000
BATCH = 200
RSS_GROWTH_LIMIT_KIB = 32 * 1024
# Maps keyed by cgroup (names as the kernel keeps them, cut at 15 characters).
CGROUP_MAPS = {"allowed_cgroups", "context_switche", "runq_latency", "syscall_stats", "syscall_errors"}


def agent_map_entries(pid: int) -> dict[str, int]:
    """Entries of every BPF map the agent process holds, by map name, read
    with bpftool: an independent view of what the agent reports."""
    ids = set()
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            for line in fdinfo.read_text().splitlines():
                if line.startswith("map_id:"):
                    ids.add(int(line.split()[1]))
        except OSError:
            continue
    counts: dict[str, int] = {}
    for map_id in sorted(ids):
        show = json.loads(subprocess.run(["bpftool", "map", "show", "id", str(map_id), "--json"],
                                         capture_output=True, check=True).stdout)
        if show.get("type") not in ("hash", "lru_hash"):
            continue  # arrays are always full
        dump = json.loads(subprocess.run(["bpftool", "map", "dump", "id", str(map_id), "--json"],
                                         capture_output=True, check=True).stdout)
        counts[show["name"]] = counts.get(show["name"], 0) + len(dump)
    return counts


def scrape(agent: RunningAgent) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(agent.get("/metrics")[1])
            for s in f.samples]


@pytest.fixture(scope="module")
def churn_agent(node: KernelNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    with running_agent(node, tmp_path_factory.mktemp("churn"), 1,
                       collectors={"syscall": {"interval": "200ms"}, "cpu": {"interval": "200ms"}},
                       syscalls=["getppid"]) as agent:
        yield agent


def test_churn_2000_pods(churn_agent: RunningAgent, node: KernelNode, capsys: pytest.CaptureFixture[str]) -> None:
    cli = churn_agent
    standing = node.add_pod("churn-standing", "standing")
    try:
        cli.wait(lambda: cli.metric("kpod_container_restarts", pod="churn-standing", container="app") == 0
                 and cli.config()["discovery"]["pods"] == 1, "the standing pod", 15)
        base_pods = cli.config()["discovery"]["pods"]
        standing.workload("getppid", 3)
        cli.wait(lambda: cli.metric("kpod_syscall_count_total", pod="churn-standing") == 3, "standing count")
        time.sleep(0.5)  # a few collection cycles on a quiet node
        rss_start = rss_kib(cli.proc.pid)
        maps_start = agent_map_entries(cli.proc.pid)
        rss_after_first = 0
        started = time.monotonic()
        for batch in range(CHURN_PODS // BATCH):
            pods = [node.add_pod(f"churn-{batch}-{i}", f"churn-{batch % 3}") for i in range(BATCH)]
            cli.wait(lambda: cli.config()["discovery"]["pods"] == base_pods + BATCH, f"batch {batch} listed", 30)
            procs = [(pod, 7 + i % 5, pod.spawn([str(node.workload), "getppid", str(7 + i % 5)]))
                     for i, pod in enumerate(pods)]
            for _, _, proc in procs:
                assert proc.wait(30) == 0
            want = {(p.namespace, p.name): n for p, n, _ in procs}

            def counted() -> dict[tuple[str, str], float]:
                return {(lb["namespace"], lb["pod"]): v for name, lb, v in scrape(cli)
                        if name == "kpod_syscall_count_total" and lb["pod"].startswith(f"churn-{batch}-")}

            cli.wait(lambda: counted() == want, f"exact counts of batch {batch}", 30)
            for pod in pods:
                node.remove_pod(pod)
            cli.wait(lambda: cli.config()["discovery"]["pods"] == base_pods, f"batch {batch} gone", 30)
            stale = {lb["pod"] for _, lb, _ in scrape(cli) if lb.get("pod", "").startswith("churn-")
                     and lb["pod"] != "churn-standing"}
            assert not stale, f"series of deleted pods: {sorted(stale)[:5]}"
            if batch == 0:
                rss_after_first = rss_kib(cli.proc.pid)
        took = time.monotonic() - started
        time.sleep(0.6)  # collection cycles after the last deletion: maps read again
        maps_end = agent_map_entries(cli.proc.pid)
        rss_end = rss_kib(cli.proc.pid)
        reported = {(lb["map"], lb["collector"]): v for name, lb, v in scrape(cli) if name == "kpod_bpf_map_entries"}
        assert cli.metric("kpod_syscall_count_total", pod="churn-standing") == 3
        with capsys.disabled():
            print(f"\nchurn: {CHURN_PODS} pods in batches of {BATCH} in {took:.0f} s; agent RSS "
                  f"{rss_start / 1024:.1f} MiB at start, {rss_after_first / 1024:.1f} MiB after the first batch, "
                  f"{rss_end / 1024:.1f} MiB at the end (growth after the first batch "
                  f"{(rss_end - rss_after_first) / 1024:+.1f} MiB); hash map entries before {maps_start}, "
                  f"after {maps_end}; agent-reported entries after {reported}")
        by_cgroup = {n: c for n, c in maps_end.items() if n in CGROUP_MAPS}
        assert by_cgroup == {n: maps_start[n] for n in by_cgroup}, f"before {maps_start}, after {maps_end}"
        assert set(by_cgroup) == CGROUP_MAPS
        # Task-keyed maps (wake-up times, syscall start times) follow the
        # node's running tasks, not pods; a leak per workload would be >= 2,000.
        assert all(c < BATCH for n, c in maps_end.items() if n not in CGROUP_MAPS), maps_end
        assert rss_end - rss_after_first < RSS_GROWTH_LIMIT_KIB, (rss_after_first, rss_end)
        assert cli.proc.poll() is None
    finally:
        node.remove_pod(standing)
