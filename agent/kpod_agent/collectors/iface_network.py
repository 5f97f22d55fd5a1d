"""ifaceNetwork: bytes, packets, errors and drops per network interface of
each pod's network namespace, from /proc/<pid>/net/dev of a task of the pod.

One series set per pod (container ""): the containers of a pod share its
network namespace. Pods in the host's network namespace (hostNetwork) are
skipped: their counters are the node's, not theirs. Loopback is skipped.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from kpod_agent.collectors.base import (
    CgroupFileCollector,
    CgroupTarget,
    MetricSpec,
    Snapshot,
    cgroup_pid,
)

_DIRECTIONS = {
    # /proc/net/dev columns after "iface:": rx bytes packets errs drop fifo frame compressed multicast,
    # then tx bytes packets errs drop fifo colls carrier compressed.
    "rx": {"bytes": 0, "packets": 1, "errors": 2, "drops": 3},
    "tx": {"bytes": 8, "packets": 9, "errors": 10, "drops": 11},
}
SKIPPED_INTERFACES = frozenset({"lo"})


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/dev -> interface -> {"rx_bytes": .., "tx_drops": .., ...}."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep or "|" in line:
            continue
        fields = rest.split()
        if len(fields) < 16 or not all(f.isdigit() for f in fields[:16]):
            continue
        out[name.strip()] = {
            f"{direction}_{figure}": int(fields[column])
            for direction, columns in _DIRECTIONS.items()
            for figure, column in columns.items()
        }
    return out


def netns_inode(proc_root: str, pid: int | str) -> int:
    return os.stat(f"{proc_root}/{pid}/ns/net").st_ino


def node_namespaces(proc_root: str, kind: str) -> set[int]:
    """Inodes of the node's own `kind` namespace: init's (pid 1), and the
    agent's (hostNetwork; also where pid 1 cannot be inspected)."""
    found = set()
    for pid in ("1", "self"):
        try:
            found.add(os.stat(f"{proc_root}/{pid}/ns/{kind}").st_ino)
        except OSError:
            continue
    return found


class IfaceNetworkCollector(CgroupFileCollector):
    name = "ifaceNetwork"
    specs = tuple(
        MetricSpec(f"kpod_net_iface_{direction}_{figure}_total",
                   f"{'Received' if direction == 'rx' else 'Transmitted'} {figure} on the pod's interface "
                   f"(/proc/net/dev of its network namespace).",
                   "counter", labels=("interface",))
        for direction in ("rx", "tx") for figure in ("bytes", "packets", "errors", "drops")
    )

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        snap = Snapshot()
        proc = self.ctx.proc_root
        host_netns = node_namespaces(proc, "net")
        chosen = self.chosen(targets, "pods")
        seen_netns: set[int] = set()
        for target in chosen:
            pid = cgroup_pid(self.ctx.layout.unified_dir(target.relpath))
            if pid is None:
                continue  # no task yet (or any more): nothing to read
            try:
                netns = netns_inode(proc, pid)
                if netns in host_netns or netns in seen_netns:
                    continue
                text = Path(f"{proc}/{pid}/net/dev").read_text()
            except FileNotFoundError:  # the task exited meanwhile
                continue
            except OSError:
                self.cgroup_read_errors += 1
                continue
            seen_netns.add(netns)
            for interface, figures in parse_net_dev(text).items():
                if interface in SKIPPED_INTERFACES:
                    continue
                for name, value in figures.items():
                    snap.add(f"kpod_net_iface_{name}_total", target.cgroup_id, float(value), (interface,))
        return snap
