"""cachestat: page cache accesses, additions, dirtied folios and dirtied
buffers per pod (bpf/cachestat.c; which counters are exact is written there
and in docs/collectors.md)."""
from __future__ import annotations

from kpod_agent.collectors.base import BpfCollector, MetricSpec


class CachestatCollector(BpfCollector):
    name = "cachestat"
    source = "cachestat.c"
    specs = (
        MetricSpec("kpod_mem_cache_accesses_total",
                   "Page cache pages looked up by read() and file page faults (approximate).", "counter",
                   map="cache_stats", value="accesses"),
        MetricSpec("kpod_mem_cache_additions_total",
                   "Pages added to the page cache (misses, readahead and new pages of writes).", "counter",
                   map="cache_stats", value="additions"),
        MetricSpec("kpod_mem_cache_dirtied_total", "Page cache folios that turned dirty.", "counter",
                   map="cache_stats", value="dirtied"),
        MetricSpec("kpod_mem_cache_buf_dirtied_total", "Buffer heads marked dirty (mark_buffer_dirty).",
                   "counter", map="cache_stats", value="buf_dirtied"),
    )
