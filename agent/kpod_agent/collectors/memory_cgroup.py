"""memoryCgroup: memory usage, peak, page cache and swap of each pod and
container, from the memory controller's files (cgroup v2 names, else v1).

Read from the pod's cgroup (container "") and each container's top cgroup
only: the files are hierarchical."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from kpod_agent.collectors.base import (
    CgroupFileCollector,
    CgroupTarget,
    MetricSpec,
    Snapshot,
    read_flat_keyed,
)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if text == "max":
        return None
    return int(text)


def memory_cgroup_figures(directory: Path) -> dict[str, int]:
    """usage, peak, cache, swap in bytes for one cgroup directory; a figure
    the kernel does not provide (memory.peak before 5.19, swap without swap
    accounting) is left out. OSError when the directory is unreadable."""
    stat = read_flat_keyed(directory / "memory.stat")
    v2 = (directory / "memory.current").exists()
    out: dict[str, int] = {}
    if v2:
        usage = _read_int(directory / "memory.current")
        peak = _read_int(directory / "memory.peak")
        swap = _read_int(directory / "memory.swap.current")
        cache = stat.get("file")
    else:
        usage = _read_int(directory / "memory.usage_in_bytes")
        peak = _read_int(directory / "memory.max_usage_in_bytes")
        cache = stat.get("total_cache", stat.get("cache"))
        swap = stat.get("total_swap", stat.get("swap"))
        if swap is None:
            memsw = _read_int(directory / "memory.memsw.usage_in_bytes")
            if memsw is not None and usage is not None:
                swap = max(memsw - usage, 0)
    for name, value in (("usage", usage), ("peak", peak), ("cache", cache), ("swap", swap)):
        if value is not None:
            out[name] = value
    return out


class MemoryCgroupCollector(CgroupFileCollector):
    name = "memoryCgroup"
    specs = (
        MetricSpec("kpod_mem_cgroup_usage_bytes", "Memory charged to the cgroup (memory.current / usage_in_bytes).",
                   "gauge"),
        MetricSpec("kpod_mem_cgroup_peak_bytes",
                   "Highest memory usage of the cgroup (memory.peak / max_usage_in_bytes).", "gauge"),
        MetricSpec("kpod_mem_cgroup_cache_bytes", "Page cache charged to the cgroup (memory.stat file / cache).",
                   "gauge"),
        MetricSpec("kpod_mem_cgroup_swap_bytes", "Swap used by the cgroup (memory.swap.current / memsw).", "gauge"),
    )

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        snap = Snapshot()
        for target in self.chosen(targets):
            directory = self.ctx.layout.controller_dir(target.relpath, "memory")
            try:
                figures = memory_cgroup_figures(directory)
            except FileNotFoundError:  # the cgroup went away since discovery
                continue
            except (OSError, ValueError):
                self.cgroup_read_errors += 1
                continue
            for name, value in figures.items():
                snap.add(f"kpod_mem_cgroup_{name}_bytes", target.cgroup_id, float(value))
        return snap
