"""cachestat: page cache accesses, additions, dirtied folios and dirtied
buffers per pod (bpf/cachestat.c; which counters are exact is written there
and in docs/collectors.md)."""
from __future__ import annotations

from collections.abc import Iterable

from kpod_agent.collectors.base import BpfCollector, CgroupTarget, MetricSpec, Snapshot, as_int


class CachestatCollector(BpfCollector):
    name = "cachestat"
    source = "cachestat.c"
    cgroup_maps = ("cache_stats",)
    specs = (
        MetricSpec("kpod_mem_cache_accesses_total",
                   "Page cache pages looked up by read() and file page faults (approximate).", "counter"),
        MetricSpec("kpod_mem_cache_additions_total",
                   "Pages added to the page cache (misses, readahead and new pages of writes).", "counter"),
        MetricSpec("kpod_mem_cache_dirtied_total", "Page cache folios that turned dirty.", "counter"),
        MetricSpec("kpod_mem_cache_buf_dirtied_total", "Buffer heads marked dirty (mark_buffer_dirty).",
                   "counter"),
    )

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        snap = Snapshot()
        for key, value in self.read_map("cache_stats"):
            cgid = as_int(key)
            snap.add("kpod_mem_cache_accesses_total", cgid, float(value.accesses))
            snap.add("kpod_mem_cache_additions_total", cgid, float(value.additions))
            snap.add("kpod_mem_cache_dirtied_total", cgid, float(value.dirtied))
            snap.add("kpod_mem_cache_buf_dirtied_total", cgid, float(value.buf_dirtied))
        return snap
