"""Reload latency and reload leaks of the real `kpod-agent` process.

Latency: file write -> /config reports the new generation, median of
--samples, for (a) a comment-only change (the pipeline's floor: poll, parse,
plan with nothing to do), (b) a filter-only change (namespace exclude: map
updates only), (c) attaching a new collector (compile + load + attach).
Leaks: --reloads SIGHUP-forced reloads alternating allowlists and filters,
then RSS growth, open fds, and the agent's BPF programs after it exits.
    sudo .venv/bin/python -m bench.bench_reload [--samples N] [--reloads N]
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import require_root, rss_mb, table
from tests.support.kernel_node import KernelNode
from tests.support.running_agent import RunningAgent, loaded_prog_ids, prog_ids_of


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--reloads", type=int, default=1000)
    args = parser.parse_args()
    require_root()
    tmp = Path(tempfile.mkdtemp())
    node = KernelNode(tmp)
    try:
        for i in range(20):
            node.add_pod(f"bench-{i}", f"ns-{i % 4}")
        agent = RunningAgent(node, tmp)
        base = {"collectors": {"cpu": {}, "syscall": {}}, "syscalls": ["getppid", "close"]}
        generation = 1
        agent.write(generation, **base)
        agent.start()

        def timed(**fields: object) -> float:
            nonlocal generation
            generation += 1
            started = time.monotonic()
            agent.write(generation, **fields)
            agent.wait(lambda: agent.config()["generation"] == generation, f"generation {generation}", 60)
            return time.monotonic() - started

        noop, filt, attach = [], [], []
        for _ in range(args.samples):
            noop.append(timed(**base))
            filt.append(timed(**base, namespaces={"include": [], "exclude": ["ns-1"]}))
            timed(**base)
            attach.append(timed(collectors={**base["collectors"], "memory": {}}, syscalls=base["syscalls"]))
            timed(**base)
        rows = [("change", "median ms", "vs floor")]
        floor = statistics.median(noop)
        for name, samples in (("nothing (floor)", noop), ("filter only", filt), ("attach a collector", attach)):
            median = statistics.median(samples)
            rows.append((name, f"{median * 1000:.0f}", f"{median / floor:.2f}x"))
        table(f"Reload latency, file write -> /config, median of {args.samples}", rows)
        print("\nThe floor includes the file poll (50 ms period).")
        filt_only = statistics.median(filt) - floor
        print(f"filter-only work beyond the floor: {filt_only * 1000:.0f} ms (target total <= 100 ms "
              "once the file is seen; SIGHUP skips the poll)")

        # SIGHUP-forced reloads: no poll delay, so this also times the apply path.
        def sighup_reload(**fields: object) -> float:
            nonlocal generation
            generation += 1
            agent.write(generation, **fields)
            started = time.monotonic()
            agent.proc.send_signal(signal.SIGHUP)
            agent.wait(lambda: agent.config()["generation"] == generation, f"generation {generation}", 60)
            return time.monotonic() - started

        variants = [
            base,
            {**base, "namespaces": {"include": [], "exclude": ["ns-2"]}},
            {**base, "syscalls": ["getppid"]},
            {**base, "podSelector": {"matchLabels": {"app": "none"}}},
        ]
        _allowlist_changes(base, sighup_reload, max(3, args.samples // 2))
        sighup_reload(**base)
        _wait_fds_settle(agent.proc.pid)  # the dropped tracepoints finish closing

        for i in range(50):  # warm-up: allocator pools and caches reach their size
            sighup_reload(**variants[i % len(variants)])
        pid = agent.proc.pid
        rss0, fds0 = rss_mb(pid), len(os.listdir(f"/proc/{pid}/fd"))
        progs0 = prog_ids_of(pid)
        times = [sighup_reload(**variants[i % len(variants)]) for i in range(args.reloads)]
        rss1, fds1 = rss_mb(pid), len(os.listdir(f"/proc/{pid}/fd"))
        progs1 = prog_ids_of(pid)
        held = prog_ids_of(pid)
        agent.proc.send_signal(signal.SIGTERM)
        agent.proc.wait(timeout=20)
        left = held & loaded_prog_ids()
        table(f"{args.reloads} reloads (SIGHUP, filters and allowlists alternating)", [
            ("measure", "before", "after"),
            ("RSS MB", f"{rss0:.1f}", f"{rss1:.1f}"),
            ("open fds", str(fds0), str(fds1)),
            ("BPF programs held", str(len(progs0)), str(len(progs1))),
        ])
        print(f"\nmedian SIGHUP reload: {statistics.median(times) * 1000:.1f} ms; "
              f"RSS growth {rss1 - rss0:+.1f} MB (target < 5 MB); fds {fds1 - fds0:+d}; "
              f"programs left after exit: {len(left)}")
    finally:
        node.close()


def _wait_fds_settle(pid: int, timeout: float = 300) -> None:
    last, stable, deadline = -1, 0, time.monotonic() + timeout
    while stable < 3 and time.monotonic() < deadline:
        now = len(os.listdir(f"/proc/{pid}/fd"))
        stable = stable + 1 if now == last else 0
        last = now
        time.sleep(1)


def _allowlist_changes(base: dict, reload: Any, samples: int) -> None:
    """Allowlist size changes, SIGHUP -> /config shows the generation, against
    a reload with nothing to do. Tracepoints dropped by a change close in the
    background; the next change does not wait for them."""
    from kpod_agent.config import syscall_numbers

    every = sorted(syscall_numbers())
    others = [n for n in every if n != "getppid"]
    sizes = {"1": ["getppid"], "10": ["getppid", *others[:9]], "96": ["getppid", *others[:95]], "every": every}

    def conf(size: str, latency: bool = False) -> dict:
        return {**base, "collectors": {**base["collectors"], "syscall": {"latency": latency}},
                "syscalls": sizes[size]}

    steps = [("nothing to do (floor)", conf("1"), conf("1")),
             ("1 -> 10", conf("1"), conf("10")),
             ("10 -> 96", conf("10"), conf("96")),
             ("96 -> every (385)", conf("96"), conf("every")),
             ("every -> 1", conf("every"), conf("1")),
             ("1 -> 96 + latency", conf("1"), conf("96", True)),
             ("96 + latency -> 1", conf("96", True), conf("1"))]
    times: dict[str, list[float]] = {}
    for _ in range(samples):
        for name, before, after in steps:
            reload(**before)
            times.setdefault(name, []).append(reload(**after))
    floor = statistics.median(times[steps[0][0]])
    rows = [("allowlist change", "median ms", "max ms", "vs floor")]
    for name, values in times.items():
        rows.append((name, f"{statistics.median(values) * 1000:.0f}", f"{max(values) * 1000:.0f}",
                     f"{statistics.median(values) / floor:.1f}x"))
    table(f"Allowlist changes, SIGHUP -> /config, median of {samples} (target <= 2 s each)", rows)


if __name__ == "__main__":
    sys.exit(main())
