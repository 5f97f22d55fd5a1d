"""Cost per syscall of the syscall collector, against a floor and nothing.

In one run, in the same fake pod, a C loop times getppid (allowlisted) and
getuid (outside the allowlist) under three conditions:
  none   nothing attached
  floor  a minimal raw-BCC per-cgroup counter on sys_enter_getppid
  agent  the agent's syscall collector, allowlist [getppid], counts and errors
  agent+latency   the same with latency histograms (collectors.syscall.latency: true)
Rounds alternate so drift hits every condition alike.
    sudo .venv/bin/python bench/bench_syscall.py [--calls N] [--rounds R]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.common import build, require_root, table

FLOOR = r"""
BPF_HASH(counts, u64, u64, 10240);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u64 id = bpf_get_current_cgroup_id(), zero = 0;
    u64 *v = counts.lookup_or_try_init(&id, &zero);
    if (v) __sync_fetch_and_add(v, 1);
    return 0;
}
"""
GETPPID, GETUID = 110, 102


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    require_root()

    from kpod_agent import bpfload
    from kpod_agent.agent import Agent
    from kpod_agent.config import syscall_numbers
    from tests.support.kernel_node import KernelNode

    assert syscall_numbers()["getppid"] == GETPPID and syscall_numbers()["getuid"] == GETUID
    loop = build("syscall_loop")
    node = KernelNode(Path(tempfile.mkdtemp()))
    try:
        pod = node.add_pod("bench", "bench")

        def measure(nr: int) -> float:
            out = pod.run([str(loop), str(nr), str(args.calls), "5"]).stdout
            return float(out)

        results: dict[tuple[str, str], list[float]] = {}

        def sample(condition: str) -> None:
            results.setdefault((condition, "getppid"), []).append(measure(GETPPID))
            results.setdefault((condition, "getuid"), []).append(measure(GETUID))

        agent = Agent(node_name="bench")
        modes = {
            "agent": node.config(collectors={"syscall": {"enabled": True}}, syscalls=["getppid"]),
            "agent+latency": node.config(collectors={"syscall": {"enabled": True, "latency": True}},
                                         syscalls=["getppid"]),
        }
        for _ in range(args.rounds):
            sample("none")
            floor = bpfload.load(FLOOR, Path("/tmp"), [], "floor")
            sample("floor")
            bpfload.unload(floor)
            for mode, config in modes.items():
                agent.apply(config)
                agent.on_index(agent.discovery.refresh())
                sample(mode)
                agent.apply(node.config(collectors={}))
        agent.shutdown()
    finally:
        node.close()

    med = {k: statistics.median(v) for k, v in results.items()}
    rows = [("condition", "getppid ns/call", "getuid ns/call (not allowlisted)")]
    for cond in ("none", "floor", "agent", "agent+latency"):
        rows.append((cond, f"{med[(cond, 'getppid')]:.0f}", f"{med[(cond, 'getuid')]:.0f}"))
    table(f"Syscall cost, median of {args.rounds} rounds x {args.calls} calls", rows)
    ratio = med[("agent", "getppid")] / med[("floor", "getppid")]
    extra = med[("agent", "getuid")] - med[("none", "getuid")]
    print(f"\nagent / floor on the allowlisted syscall: {ratio:.2f}x (target <= 1.2x)")
    print(f"agent overhead on a syscall outside the allowlist: {extra:+.0f} ns (target <= 30 ns)")
    print(f"agent+latency / floor on the allowlisted syscall: "
          f"{med[('agent+latency', 'getppid')] / med[('floor', 'getppid')]:.2f}x")
    extra_lat = med[("agent+latency", "getuid")] - med[("none", "getuid")]
    print(f"agent+latency overhead on a syscall outside the allowlist: {extra_lat:+.0f} ns")


if __name__ == "__main__":
    main()
