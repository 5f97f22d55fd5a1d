"""Cost of the l7 collector for a server, as requests/s ratios in one run.

Fake pods on a private pod network (own network namespaces, veth pairs):
nginx (one worker, a 3-byte response, keep-alive) and redis-server in the
server pod, the load generators (`ab -k`, `redis-benchmark`) in the client
pod, and a third pod that does nothing. Conditions:
  off          the l7 program not loaded
  other pod    loaded, the filter selecting only the idle third pod: the
               server and client pay the tracepoints and one filter lookup
  server pod   loaded, selecting the server pod: its reads and writes are
               parsed and paired
  both pods    loaded, selecting the server and the client pod
The program is loaded once; "off" detaches its three tracepoints, the other
conditions attach them and set the filter map. A round takes one sample of
each condition in a rotated order, so load from other work on the machine
hits each alike; the tables give the median over rounds of each
condition's requests/s, and of the pods' CPU time per request (cgroup
cpuacct, which includes the BPF programs run in their syscalls), divided by
"off" of the same round. On a busy 2-core machine requests/s moves by
±15% between samples; CPU per request is the steadier measure.

    sudo .venv/bin/python -m bench.bench_l7 [--rounds R] [--requests N]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import textwrap
from pathlib import Path

from bench.common import require_root, table
from kpod_agent import btf
from kpod_agent.collectors.base import CollectorContext
from kpod_agent.collectors.l7 import L7Collector
from kpod_agent.config import AgentConfig, config_from_dict
from tests.support import l7_servers
from tests.support.kernel_node import KernelNode
from tests.support.pod_network import PodNet, PodNetwork, pod_network

NGINX_PORT = 8080
CONDITIONS = ("off", "other pod", "server pod", "both pods")


def start_nginx(net: PodNet, tmp: Path) -> subprocess.Popen:
    conf = tmp / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""
        daemon off;
        worker_processes 1;
        pid {tmp}/nginx.pid;
        error_log {tmp}/nginx-error.log;
        events {{ worker_connections 1024; }}
        http {{
            access_log off;
            client_body_temp_path {tmp};
            keepalive_requests 1000000;
            server {{
                listen {NGINX_PORT};
                location / {{ return 200 "ok\\n"; }}
            }}
        }}
    """))
    proc = net.spawn(["nginx", "-c", str(conf), "-e", str(tmp / "nginx-error.log")],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    l7_servers.wait_listening(net, NGINX_PORT, proc)
    return proc


def run_ab(client: PodNet, server: PodNet, requests: int) -> float:
    out = client.run(["ab", "-q", "-k", "-n", str(requests), "-c", "4",
                      f"http://{server.ip}:{NGINX_PORT}/"], timeout=300)
    match = re.search(rb"Requests per second:\s+([\d.]+)", out.stdout)
    if not match:
        raise RuntimeError(f"ab: {out.stdout[-500:]!r} {out.stderr[-500:]!r}")
    return float(match.group(1))


def run_redis(client: PodNet, server: PodNet, requests: int) -> float:
    out = client.run(["redis-benchmark", "-h", server.ip, "-p", str(l7_servers.REDIS_PORT), "-n", str(requests),
                      "-c", "4", "-t", "get", "--csv"], timeout=300)
    match = re.search(rb'"GET","([\d.]+)"', out.stdout)
    if not match:
        raise RuntimeError(f"redis-benchmark: {out.stdout[-500:]!r} {out.stderr[-500:]!r}")
    return float(match.group(1))


class Switch:
    """Attaches and detaches the loaded program's tracepoints: "off" runs
    nothing of ours, without recompiling between samples."""

    TRACEPOINTS = {"sock:inet_sock_set_state": "tracepoint__sock__inet_sock_set_state",
                   "tcp:tcp_destroy_sock": "tracepoint__tcp__tcp_destroy_sock"}
    SOCK = ("sock:sock_send_length", "sock:sock_recv_length")

    def __init__(self, collector: L7Collector) -> None:
        self.bpf = collector.bpf
        self.raw = collector.raw_tracepoints
        self.on = True

    def set(self, on: bool) -> None:
        if on == self.on:
            return
        for tp, fn in self.TRACEPOINTS.items():
            if on:
                self.bpf.attach_tracepoint(tp=tp, fn_name=fn)
            else:
                self.bpf.detach_tracepoint(tp)
        for tp in self.SOCK:
            name = tp.split(":")[1]
            if on and self.raw:
                self.bpf.attach_raw_tracepoint(tp=name, fn_name="l7_sock")
            elif on:
                self.bpf.attach_tracepoint(tp=tp, fn_name="l7_sock")
            elif self.raw:
                self.bpf.detach_raw_tracepoint(name)
            else:
                self.bpf.detach_tracepoint(tp)
        self.on = on


def cpu_ns(nets: list[PodNet]) -> int:
    """CPU time the pods' app containers used (cgroup v1 cpuacct), BPF
    programs run in their syscalls included."""
    total = 0
    for net in nets:
        rel = net.pod.relpaths["app"]
        total += int((net.pod.node.layout.controller_dir(rel, "cpuacct") / "cpuacct.usage").read_text())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=10000, help="requests per sample")
    parser.add_argument("--only", choices=("http", "redis"), help="one workload")
    parser.add_argument("--perf-event", action="store_true",
                        help="the sock tracepoints' perf-event form (what a kernel without BTF gets)")
    args = parser.parse_args()
    if args.perf_event:
        def no_btf(*_: object) -> int:
            raise btf.BtfError("--perf-event")
        btf.member_offset = no_btf
    require_root()
    tmp = Path(tempfile.mkdtemp(prefix="kpod-bench-l7-"))
    node = KernelNode(tmp)
    config = config_from_dict({"profile": "custom", "collectors": {"l7": {}}})
    procs: list[subprocess.Popen] = []
    try:
        with pod_network() as network:
            try:
                measure(args, node, network, config, procs, tmp)
            finally:
                for proc in procs:
                    l7_servers.stop(proc)
    finally:
        node.close()


def measure(args: argparse.Namespace, node: KernelNode, network: PodNetwork, config: AgentConfig,
            procs: list[subprocess.Popen], tmp: Path) -> None:
    server, client, idle = (network.attach(node.add_pod(f"bench-{n}", "bench")) for n in ("srv", "cli", "idle"))
    procs.append(start_nginx(server, tmp))
    procs.append(l7_servers.start_redis(server, tmp))
    ids = {p: net.pod.cgroup_id() for p, net in (("srv", server), ("cli", client), ("idle", idle))}
    selections = {"other pod": {ids["idle"]: 0}, "server pod": {ids["srv"]: 0},
                  "both pods": {ids["srv"]: 0, ids["cli"]: 0}}
    workloads = {"HTTP (nginx, ab -k)": run_ab, "Redis GET (redis-benchmark)": run_redis}
    if args.only:
        workloads = {k: v for k, v in workloads.items() if k.lower().startswith(args.only)}
    results: dict[tuple[str, str], list[float]] = {}
    absolute: dict[tuple[str, str], list[float]] = {}
    cpu_ratio: dict[tuple[str, str], list[float]] = {}
    cpu_abs: dict[tuple[str, str], list[float]] = {}
    collector = L7Collector(CollectorContext(layout=node.layout))
    collector.attach(config)
    switch = Switch(collector)
    print(f"sock tracepoints: {'raw' if collector.raw_tracepoints else 'perf-event'}", flush=True)
    try:
        for workload in workloads.values():  # warm-up: connections, caches
            workload(client, server, args.requests)
        for r in range(args.rounds):
            order = CONDITIONS[r % len(CONDITIONS):] + CONDITIONS[:r % len(CONDITIONS)]
            for name, workload in workloads.items():
                rates: dict[str, float] = {}
                cpu: dict[str, float] = {}
                for condition in order:
                    switch.set(condition != "off")
                    if condition != "off":
                        collector.set_filter(selections[condition])
                    used = cpu_ns([server, client])
                    rates[condition] = workload(client, server, args.requests)
                    cpu[condition] = (cpu_ns([server, client]) - used) / args.requests
                for condition in CONDITIONS:
                    results.setdefault((name, condition), []).append(rates[condition] / rates["off"])
                    absolute.setdefault((name, condition), []).append(rates[condition])
                    cpu_ratio.setdefault((name, condition), []).append(cpu[condition] / cpu["off"])
                    cpu_abs.setdefault((name, condition), []).append(cpu[condition])
            if (r + 1) % 10 == 0:
                print(f"round {r + 1}/{args.rounds}", flush=True)
    finally:
        collector.detach()
    rows = [("workload", *(f"{c} (req/s, ratio)" for c in CONDITIONS))]
    for name in workloads:
        rows.append((name, *(f"{statistics.median(absolute[(name, c)]):.0f}, "
                             f"{statistics.median(results[(name, c)]):.3f}" for c in CONDITIONS)))
    table(f"l7 collector: requests/s and ratio to off, median of {args.rounds} rounds", rows)
    rows = [("workload", *(f"{c} (us/request, ratio)" for c in CONDITIONS))]
    for name in workloads:
        rows.append((name, *(f"{statistics.median(cpu_abs[(name, c)]) / 1000:.1f}, "
                             f"{statistics.median(cpu_ratio[(name, c)]):.3f}" for c in CONDITIONS)))
    table("CPU time of server and client pods per request (cpuacct), ratio to off", rows)
    loss = [("workload", "measure", "other pod (goal <= 2%)", "server pod (goal <= 10%)", "both pods")]
    for name in workloads:
        loss.append((name, "requests/s lost", *(f"{(1 - statistics.median(results[(name, c)])) * 100:.1f}%"
                                                for c in CONDITIONS[1:])))
        loss.append((name, "CPU per request added", *(f"{(statistics.median(cpu_ratio[(name, c)]) - 1) * 100:.1f}%"
                                                      for c in CONDITIONS[1:])))
    table("Cost", loss)

if __name__ == "__main__":
    main()
