"""Pod networking for fake pods: each pod in its own network namespace.

Layout (all private to one test run, removed on exit):

    fabric netns  kpf<tag>      bridge kpb<tag>  (the "node's" pod network)
    pod netns     kpp<tag>n<i>  eth0 = 10.<a>.<b>.<i+2>/24, veth peer on the bridge

The bridge lives in a namespace of its own rather than the host's: on a host
with Docker, br_netfilter sends bridged frames through the host's iptables,
whose FORWARD policy Docker sets to DROP. A fresh namespace has no rules.

A process joins its pod's cgroups (FakePod.spawn) and then its network
namespace (`ip netns exec`), so everything it sends is charged to that pod and
travels over a real veth pair to the other pod.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.support.kernel_node import FakePod

_counter = itertools.count()


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _quiet(*argv: str) -> None:
    subprocess.run(list(argv), capture_output=True, check=False)


@dataclass
class PodNet:
    """One fake pod attached to the pod network."""

    pod: FakePod
    netns: str
    ip: str

    def argv(self, argv: list[str]) -> list[str]:
        """argv run inside the pod's network namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def spawn(self, argv: list[str], container: str = "app", **kwargs: Any) -> subprocess.Popen:
        return self.pod.spawn(self.argv(argv), container, **kwargs)

    def run(self, argv: list[str], container: str = "app", timeout: float = 60, **kwargs: Any
            ) -> subprocess.CompletedProcess:
        return self.pod.run(self.argv(argv), container, timeout=timeout, **kwargs)


@dataclass
class PodNetwork:
    tag: str
    subnet: str  # "10.a.b" (a /24)
    fabric: str
    bridge: str
    pods: dict[str, PodNet] = field(default_factory=dict)

    def attach(self, pod: FakePod) -> PodNet:
        """Give `pod` its own network namespace on the bridge; records its IP
        as the pod's status.podIP (what kubelet and the API server report)."""
        index = len(self.pods)
        if index > 250:
            raise ValueError("a pod network holds at most 251 pods")
        netns, host_if = f"kpp{self.tag}n{index}", f"kpv{self.tag}n{index}"
        ip = f"{self.subnet}.{index + 2}"
        _ip("netns", "add", netns)
        net = PodNet(pod, netns, ip)
        self.pods[pod.name] = net
        _ip("-n", self.fabric, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("-n", self.fabric, "link", "set", host_if, "master", self.bridge)
        _ip("-n", self.fabric, "link", "set", host_if, "up")
        _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        # IPv6 off: no router solicitations or neighbour discovery adding packets.
        _quiet("ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        status = pod.doc.setdefault("status", {})
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
        pod.node.kubelet.remove_pod(pod.uid)  # re-list the pod with its address
        pod.node.kubelet.add_pod(pod.doc)
        return net

    def close(self) -> None:
        for net in self.pods.values():
            _quiet("ip", "netns", "del", net.netns)
        _quiet("ip", "netns", "del", self.fabric)
        self.pods.clear()


@contextmanager
def pod_network() -> Iterator[PodNetwork]:
    """A private pod network; names and the /24 are unique to this process."""
    if shutil.which("ip") is None:
        raise RuntimeError("iproute2 (ip) is needed for pod networks")
    n = next(_counter)
    tag = f"{os.getpid() % 100000}x{n}"
    subnet = f"10.{214 + n % 20}.{os.getpid() % 250 + 1}"
    fabric, bridge = f"kpf{tag}", f"kpb{tag}"
    _ip("netns", "add", fabric)
    net = PodNetwork(tag, subnet, fabric, bridge)
    try:
        _ip("-n", fabric, "link", "add", bridge, "type", "bridge")
        _ip("-n", fabric, "link", "set", bridge, "up")
        yield net
    finally:
        net.close()
