"""Cost of the service topology on TCP traffic, as a ratio of overheads.

A C loop (bench/tcp_pingpong.c) bounces one byte over a loopback TCP
connection, both ends in one process, and reports its CPU time per round
trip: two sends, two receives and two received segments, each hitting the
network collector's tracepoints. Conditions:
  none       nothing of ours attached
  floor      a bare BCC per-cgroup byte counter on sock_send_length and
             sock_recv_length: what counting TCP bytes per cgroup costs at the least
  network    the network collector without its topology (compiled with -DKPOD_NO_EDGES)
  topology   the network collector as shipped (per-cgroup series + TCP edges)
Every program is loaded once; a condition is switched on by attaching its
tracepoints and off by detaching them, and the conditions rotate in short
samples, so other load on the machine hits each alike. Every cgroup is
counted (filter off). Overhead = (condition - none) / (floor - none) per
round; the table shows medians.
    sudo .venv/bin/python -m bench.bench_topology [--rounds R] [--trips N]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
from pathlib import Path
from typing import Any

from bench.common import build, require_root, table

FLOOR = r"""
BPF_HASH(counts, u64, u64, 10240);
static __always_inline void add(int ret) {
    if (ret <= 0) return;
    u64 id = bpf_get_current_cgroup_id(), zero = 0;
    u64 *v = counts.lookup_or_try_init(&id, &zero);
    if (v) __sync_fetch_and_add(v, (u64)ret);
}
TRACEPOINT_PROBE(sock, sock_send_length) { add(args->ret); return 0; }
TRACEPOINT_PROBE(sock, sock_recv_length) { add(args->ret); return 0; }
"""


class Switch:
    """The tracepoints a loaded BPF object attached, detached and re-attached on demand."""

    def __init__(self, bpf: Any) -> None:
        self.bpf = bpf
        self.points = [tp.decode() if isinstance(tp, bytes) else tp for tp in list(bpf.tracepoint_fds)]
        self.off()

    def on(self) -> None:
        for tp in self.points:
            self.bpf.attach_tracepoint(tp=tp, fn_name="tracepoint__" + tp.replace(":", "__"))

    def off(self) -> None:
        for tp in self.points:
            self.bpf.detach_tracepoint(tp)


def load_all() -> tuple[dict[str, Switch | None], list[Any]]:
    from kpod_agent import bpfload, cgroups
    from kpod_agent.collectors.base import CollectorContext
    from kpod_agent.collectors.network import NetworkCollector
    from kpod_agent.config import config_from_dict

    def collector(edges: bool) -> NetworkCollector:
        class Variant(NetworkCollector):
            def cflags(self, config: Any) -> list[str]:
                return [*super().cflags(config), *([] if edges else ["-DKPOD_NO_EDGES"])]

        made = Variant(CollectorContext(layout=cgroups.detect_layout()))
        made.attach(config_from_dict({"collectors": {"network": {"enabled": True}}}))
        made.set_filter(None)  # count every cgroup
        return made

    network, full = collector(False), collector(True)
    floor = bpfload.load(text=FLOOR, include_dir=Path("/"), cflags=[], what="floor")
    switches = {"none": None, "floor": Switch(floor), "network": Switch(network.bpf), "topology": Switch(full.bpf)}
    return switches, [network, full, floor]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--trips", type=int, default=20_000)
    args = parser.parse_args()
    require_root()
    from kpod_agent import bpfload

    binary = build("tcp_pingpong")
    switches, objects = load_all()
    conditions = list(switches)
    samples: dict[str, list[float]] = {c: [] for c in conditions}
    try:
        for r in range(args.rounds):
            for condition in conditions[r % 4:] + conditions[:r % 4]:
                switch = switches[condition]
                if switch is not None:
                    switch.on()
                try:
                    out = subprocess.run([str(binary), str(args.trips)], capture_output=True, text=True, check=True)
                    samples[condition].append(float(out.stdout))
                finally:
                    if switch is not None:
                        switch.off()
    finally:
        for obj in objects:
            obj.detach() if hasattr(obj, "detach") else bpfload.unload(obj)
    rows = [("condition", "CPU ns per round trip (median)", "overhead vs floor's (median)")]
    for condition in conditions:
        ratios = [(samples[condition][i] - samples["none"][i]) / (samples["floor"][i] - samples["none"][i])
                  for i in range(args.rounds)]
        rows.append((condition, f"{statistics.median(samples[condition]):.0f}",
                     "-" if condition == "none" else f"{statistics.median(ratios):.2f}x"))
    table(f"TCP round trip over loopback, {args.trips} trips x {args.rounds} rounds", rows)
    added = statistics.median(t - n for t, n in zip(samples["topology"], samples["network"], strict=True))
    print(f"topology over the network collector: {added:+.0f} ns per round trip (median of paired samples)")


if __name__ == "__main__":
    main()
