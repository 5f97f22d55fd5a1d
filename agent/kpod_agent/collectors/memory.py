"""memory: OOM kills (bpf/memory.c); major faults, rss, working set and page
cache from each cgroup's memory.stat (v1 hierarchical `total_*` keys, v2 keys)."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from kpod_agent.collectors.base import BpfCollector, CgroupTarget, MetricSpec, Snapshot, read_flat_keyed


def memory_figures(stat: dict[str, int], usage: int | None) -> dict[str, int]:
    """memory.stat (+ usage) -> rss, cache, working set, major faults.

    Working set is usage minus inactive file pages, as cAdvisor and the
    kubelet compute it for eviction."""
    v1 = "total_rss" in stat
    rss = stat.get("total_rss", 0) if v1 else stat.get("anon", 0)
    cache = stat.get("total_cache", 0) if v1 else stat.get("file", 0)
    inactive_file = stat.get("total_inactive_file", 0) if v1 else stat.get("inactive_file", 0)
    faults = stat.get("total_pgmajfault", stat.get("pgmajfault", 0))
    if usage is None:
        usage = rss + cache
    return {
        "rss": rss,
        "cache": cache,
        "working_set": max(usage - inactive_file, 0),
        "major_faults": faults,
    }


def read_memory_usage(directory: Path) -> int | None:
    for name in ("memory.current", "memory.usage_in_bytes"):
        try:
            return int((directory / name).read_text().strip())
        except (OSError, ValueError):
            continue
    return None


class MemoryCollector(BpfCollector):
    name = "memory"
    source = "memory.c"
    specs = (
        MetricSpec("kpod_mem_oom_kills_total", "Processes of the cgroup killed by the OOM killer.", "counter",
                   map="oom_kills"),
        MetricSpec("kpod_mem_major_page_faults_total", "Major page faults (memory.stat pgmajfault).", "counter"),
        MetricSpec("kpod_mem_rss_bytes", "Anonymous memory (memory.stat rss/anon).", "gauge"),
        MetricSpec("kpod_mem_working_set_bytes", "Usage minus inactive file pages, as the kubelet evicts on.", "gauge"),
        MetricSpec("kpod_mem_cache_bytes", "Page cache (memory.stat cache/file).", "gauge"),
    )

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        # OOM kills are the spec's map; the rest is in memory.stat, no map.
        snap = super().collect(targets)
        for target in targets:
            directory = self.ctx.layout.controller_dir(target.relpath, "memory")
            try:
                stat = read_flat_keyed(directory / "memory.stat")
            except OSError:
                self.cgroup_read_errors += 1
                continue
            figures = memory_figures(stat, read_memory_usage(directory))
            snap.add("kpod_mem_major_page_faults_total", target.cgroup_id, float(figures["major_faults"]))
            snap.add("kpod_mem_rss_bytes", target.cgroup_id, float(figures["rss"]))
            snap.add("kpod_mem_working_set_bytes", target.cgroup_id, float(figures["working_set"]))
            snap.add("kpod_mem_cache_bytes", target.cgroup_id, float(figures["cache"]))
        return snap
