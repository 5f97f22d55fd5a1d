"""An `Agent` with thousands of fake pods and no kernel: what the exporter
and the HTTP server do at node scale, measured and checked without BPF.

The collectors are the real ones' metric specs (cpu, memory, network,
syscall) over synthetic snapshots; discovery is a fixed pod list; the rest
— config, filters, pod index, exporter — is the agent's own code.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from kpod_agent.agent import Agent
from kpod_agent.collectors.base import CgroupTarget, Collector, Hist, Snapshot
from kpod_agent.collectors.cpu import CpuCollector
from kpod_agent.collectors.memory import MemoryCollector
from kpod_agent.collectors.network import NetworkCollector
from kpod_agent.collectors.syscall import SyscallCollector
from kpod_agent.config import config_from_dict
from kpod_agent.pods import CgroupEntry, ContainerInfo, PodIndex, PodInfo

SYSCALLS = ("read", "write", "openat", "close", "futex")
COLLECTORS = {"cpu": CpuCollector, "memory": MemoryCollector, "network": NetworkCollector,
              "syscall": SyscallCollector}


def pod_index(pods: int, containers: int = 2) -> PodIndex:
    """`pods` pods of `containers` containers: 1 + containers cgroups each."""
    entries: dict[int, CgroupEntry] = {}
    infos: dict[str, PodInfo] = {}
    ids = itertools.count(1_000_000)
    for i in range(pods):
        uid = f"00000000-0000-0000-0000-{i:012d}"
        namespace, name = f"ns-{i % 50}", f"pod-{i}"
        base = f"kubepods.slice/kubepods-pod{uid.replace('-', '_')}.slice"
        cgid = next(ids)
        entries[cgid] = CgroupEntry(cgid, base, namespace, name, "", uid)
        names = [f"c{j}" for j in range(containers)]
        for container in names:
            cgid = next(ids)
            entries[cgid] = CgroupEntry(cgid, f"{base}/cri-containerd-{cgid}.scope", namespace, name, container, uid)
        infos[uid] = PodInfo(uid, namespace, name, {"app": f"app-{i % 20}"}, "burstable",
                             tuple(ContainerInfo(c, "containerd", f"{i}{c}", i % 3) for c in names))
    return PodIndex(entries=entries, pods=infos)


class _StaticDiscovery:
    """Discovery that always lists the same pods."""

    def __init__(self, index: PodIndex) -> None:
        self.index = index
        self.synced = True
        self.errors_total = 0
        self.last_error = None
        self.services: dict[str, tuple[str, str]] = {}

    def refresh(self) -> PodIndex:
        return self.index

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


# Two series per cgroup: 15,000 cgroups make a scrape of about 4.4 MB, the
# size measured on a 5,000-pod node (most cgroups have data in few maps).
FILLED = ("kpod_cpu_context_switches_total", "kpod_mem_rss_bytes")


def _fake(real: type[Collector], filled: tuple[str, ...]) -> type[Collector]:
    """A collector with `real`'s name and specs whose every read returns a
    new snapshot: each allowed cgroup's `filled` series grow by a step."""

    class Fake(Collector):
        name = real.name
        specs = real.specs

        def __init__(self, ctx: Any) -> None:
            super().__init__(ctx)
            self.allowed: dict[int, int] = {}
            self.reads = 0

        def set_filter(self, allowed: Any) -> None:
            self.allowed = dict(allowed or {})

        def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
            self.reads += 1
            snap = Snapshot()
            for spec in self.specs:
                if spec.name not in filled:
                    continue
                extra = tuple(SYSCALLS[0] if label == "syscall" else "EAGAIN" for label in spec.labels)
                for cgid in self.allowed:
                    value: float | Hist
                    if spec.kind == "histogram":
                        value = Hist(tuple(range(self.reads, self.reads + 12)), 1e6 * self.reads)
                    else:
                        value = float((cgid % 997) * self.reads)
                    snap.add(spec.name, cgid, value, extra)
            self.map_stats = {"fake": (len(self.allowed), 10240)}
            return snap

    Fake.__name__ = f"Fake{real.__name__}"
    return Fake


def fake_agent(pods: int, containers: int = 2, interval: str = "5s", filled: tuple[str, ...] = FILLED) -> Agent:
    """An applied agent over `pods` fake pods, one collection done."""
    index = pod_index(pods, containers)
    agent = Agent(node_name="node-1", collector_classes={n: _fake(c, filled) for n, c in COLLECTORS.items()},
                  discovery_factory=lambda config, resolver, on_change: _StaticDiscovery(index))  # type: ignore
    config = config_from_dict({
        "profile": "custom", "generation": 1, "includeLabels": ["app"], "syscalls": list(SYSCALLS),
        "namespaces": {"include": [], "exclude": []},
        "collectors": {n: {"enabled": True, "interval": interval} for n in COLLECTORS},
        "discovery": {"mode": "kubelet", "interval": "1h"},
    })
    assert agent.apply(config), agent.reloads.last_error
    agent.collect_due(force=True)
    return agent
