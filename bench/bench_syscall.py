"""Cost per syscall of the syscall collector, as a ratio of overheads.

In one run, in the same fake pod (pod filter on: discovery lists the pod and
a few neighbours), a C loop times getppid (allowlisted) and getuid (outside
the allowlist) in CPU time of the calling thread, under:
  none            nothing of ours attached
  floor           a bare BCC per-cgroup counter on raw_syscalls:sys_enter:
                  what counting syscalls per cgroup costs at the least
  floor-tp        the same counter on sys_enter_getppid only (stricter)
  agent           the agent's syscall collector, allowlist [getppid]
  agent+latency   the same with latency histograms
Every program is loaded once; a condition is switched on by attaching its
tracepoints and off by detaching them, and the conditions rotate in short
samples many times per round, so load from other work on the machine hits
each alike. Overhead = (condition - none) / (floor - none), per round; the
table shows the median over rounds.

--sizes adds the table of overhead against the allowlist's size (1, 10, 96,
every syscall): getppid always in it, getuid only in "every".
    sudo .venv/bin/python -m bench.bench_syscall [--rounds R] [--cycles C] [--sizes]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.common import build, require_root, table

FLOOR = r"""
BPF_HASH(counts, u64, u64, 10240);
int floor_count(void *ctx) {
    u64 id = bpf_get_current_cgroup_id(), zero = 0;
    u64 *v = counts.lookup_or_try_init(&id, &zero);
    if (v) __sync_fetch_and_add(v, 1);
    return 0;
}
"""
GETPPID, GETUID = 110, 102


class Loop:
    """One syscall_loop process in the pod, answering timed samples."""

    def __init__(self, pod: Any, binary: Path) -> None:
        self.proc = pod.spawn([str(binary), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def sample(self, nr: int, calls: int) -> float:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{nr} {calls}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


class Switch:
    """Tracepoints of a loaded BPF object, attached and detached on demand."""

    def __init__(self, bpf: Any, points: list[tuple[str, str]]) -> None:
        self.bpf, self.points = bpf, points

    def on(self) -> None:
        for tp, fn in self.points:
            self.bpf.attach_tracepoint(tp=tp, fn_name=fn)

    def off(self) -> None:
        for tp, _ in self.points:
            self.bpf.detach_tracepoint(tp)


def _collector_switch(agent: Any) -> Switch:
    """Take the running syscall collector's tracepoints over: detach them now
    (and wait out the background closes) and let the bench re-attach them."""
    from kpod_agent.collectors.syscall import CLOSER

    collector = agent.states["syscall"].collector
    points = [(tp.decode(), "sys_enter" if "sys_enter_" in tp.decode() else "sys_exit")
              for tp in collector.bpf.tracepoint_fds]
    switch = Switch(collector.bpf, sorted(points, key=lambda p: p[1] != "sys_exit"))
    switch.off()
    CLOSER.wait_idle(600)
    return switch


def _ratios(samples: dict[str, list[float]], baseline: str = "floor") -> dict[str, float]:
    med = {k: statistics.median(v) for k, v in samples.items()}
    none = med["none"]
    return {k: (v - none) / (med[baseline] - none) for k, v in med.items() if k != "none"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=12, help="samples of each condition per round")
    parser.add_argument("--calls", type=int, default=30_000, help="calls per sample")
    parser.add_argument("--sizes", action="store_true", help="also overhead against allowlist size")
    args = parser.parse_args()
    require_root()

    from kpod_agent import bpfload
    from kpod_agent.agent import Agent
    from kpod_agent.collectors.syscall import CLOSER
    from kpod_agent.config import syscall_numbers
    from tests.support.kernel_node import KernelNode

    assert syscall_numbers()["getppid"] == GETPPID and syscall_numbers()["getuid"] == GETUID
    binary = build("syscall_loop")
    node = KernelNode(Path(tempfile.mkdtemp()))
    agents: list[Any] = []
    loaded: list[Any] = []
    try:
        pod = node.add_pod("bench", "bench")
        for i in range(20):  # neighbours: the filter map is not a one-entry toy
            node.add_pod(f"neighbour-{i}", "bench")
        loop = Loop(pod, binary)
        floor_raw = bpfload.load(FLOOR, Path("/tmp"), [], "floor")
        floor_tp = bpfload.load(FLOOR, Path("/tmp"), [], "floor-tp")
        loaded += [floor_raw, floor_tp]
        switches = {
            "none": Switch(None, []),
            "floor": Switch(floor_raw, [("raw_syscalls:sys_enter", "floor_count")]),
            "floor-tp": Switch(floor_tp, [("syscalls:sys_enter_getppid", "floor_count")]),
        }
        for mode, latency in (("agent", False), ("agent+latency", True)):
            agent = Agent(node_name="bench")
            agents.append(agent)
            assert agent.apply(node.config(collectors={"syscall": {"enabled": True, "latency": latency}},
                                           syscalls=["getppid"]))
            agent.on_index(agent.discovery.refresh())
            assert agent.filters["syscall"], "the pod filter must be on"
            switches[mode] = _collector_switch(agent)

        names = list(switches)
        per_round: list[dict[str, float]] = []
        unrelated: list[dict[str, float]] = []
        for r in range(args.rounds):
            samples: dict[str, list[float]] = {}
            other: dict[str, list[float]] = {}
            for c in range(args.cycles):
                shift = (r * args.cycles + c) % len(names)
                for name in names[shift:] + names[:shift]:
                    switches[name].on()
                    samples.setdefault(name, []).append(loop.sample(GETPPID, args.calls))
                    other.setdefault(name, []).append(loop.sample(GETUID, args.calls))
                    switches[name].off()
            per_round.append(_ratios(samples))
            med = {k: statistics.median(v) for k, v in other.items()}
            unrelated.append({k: v - med["none"] for k, v in med.items()})
            base = {k: statistics.median(v) for k, v in samples.items()}
            per_round[-1]["none ns"] = base["none"]
            for k in names[1:]:
                per_round[-1][k + " ns"] = base[k] - base["none"]
            print(f"round {r + 1}: " + ", ".join(f"{k} {per_round[-1][k]:.2f}x" for k in names[1:]), flush=True)

        def med(key: str, rows: list[dict[str, float]]) -> float:
            return statistics.median(row[key] for row in rows)

        rows = [("condition", "getppid: added ns", "overhead / floor's", "getuid (not allowlisted): added ns")]
        rows.append(("none", f"{med('none ns', per_round):.0f} (baseline)", "-", "-"))
        for name in names[1:]:
            rows.append((name, f"+{med(name + ' ns', per_round):.0f}", f"**{med(name, per_round):.2f}x**",
                         f"{med(name, unrelated):+.0f}"))
        table(f"Syscall overhead, CPU time per call, median of {args.rounds} rounds "
              f"(each {args.cycles} interleaved samples x {args.calls} calls per condition)", rows)
        print(f"\nagent / floor: {med('agent', per_round):.2f}x (target <= 1.2x); "
              f"per round: {', '.join(format(row['agent'], '.2f') for row in per_round)}")

        if args.sizes:
            _sizes_table(args, node, loop, switches, Agent, CLOSER)
        loop.close()
    finally:
        for agent in agents:
            agent.shutdown()
        for bpf in loaded:
            bpfload.unload(bpf)
        node.close()


def _sizes_table(args: argparse.Namespace, node: Any, loop: Loop, switches: dict[str, Switch],
                 agent_class: Any, closer: Any) -> None:
    """Overhead against allowlist size: per size, a block of samples with the
    agent attached with that allowlist, then (its tracepoints closed) a block
    of none and floor samples. Blocks, not interleaved samples: switching 385
    tracepoints off takes 25 s, so these ratios are noisier than the main
    table's."""
    from kpod_agent.config import syscall_numbers

    every = sorted(syscall_numbers())
    others = [n for n in every if n not in ("getppid", "getuid")]
    sizes = {"1": ["getppid"], "10": ["getppid", *others[:9]], "96": ["getppid", *others[:95]], "every": every}
    agent = agent_class(node_name="bench")
    results: dict[str, list[tuple[float, float]]] = {}
    try:
        for _ in range(max(1, args.rounds // 2)):
            for size, allowlist in sizes.items():
                assert agent.apply(node.config(collectors={"syscall": {}}, syscalls=allowlist))
                agent.on_index(agent.discovery.refresh())
                with_agent, with_agent_u = [], []
                for _ in range(args.cycles):
                    with_agent.append(loop.sample(GETPPID, args.calls))
                    with_agent_u.append(loop.sample(GETUID, args.calls))
                assert agent.apply(node.config(collectors={}))
                closer.wait_idle(900)
                base, base_u, floor = [], [], []
                for _ in range(args.cycles):
                    base.append(loop.sample(GETPPID, args.calls))
                    base_u.append(loop.sample(GETUID, args.calls))
                    switches["floor"].on()
                    floor.append(loop.sample(GETPPID, args.calls))
                    switches["floor"].off()
                none = statistics.median(base)
                ratio = (statistics.median(with_agent) - none) / (statistics.median(floor) - none)
                extra_u = statistics.median(with_agent_u) - statistics.median(base_u)
                results.setdefault(size, []).append((ratio, extra_u))
    finally:
        agent.shutdown()
    rows = [("allowlisted syscalls", "getppid overhead / floor's", "getuid added ns")]
    for size, values in results.items():
        rows.append((size, f"{statistics.median(v[0] for v in values):.2f}x",
                     f"{statistics.median(v[1] for v in values):+.0f}" + (" (allowlisted)" if size == "every" else "")))
    table("Overhead against allowlist size (same run; floor = raw_syscalls counter)", rows)


if __name__ == "__main__":
    main()
