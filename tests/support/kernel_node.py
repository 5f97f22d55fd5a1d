"""A node as the agent sees it, made of real parts on this kernel.

Pods are kubelet-style cgroup directories (in the cgroup2 tree and mirrored
in every v1 hierarchy on hybrid hosts) under a kubepods root unique to the
test, listed by a real fake-kubelet HTTP server. Workloads are real
processes moved into a container's cgroups before they exec, so every event
they cause is charged to that container from their first instruction.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpod_agent import cgroups
from kpod_agent.config import AgentConfig, config_from_dict
from tests.support.fake_kubelet import FakeKubelet, create_pod_cgroups, make_pod, remove_cgroup_tree

WORKLOAD_SOURCE = Path(__file__).with_name("workload.c")
# Controllers a process joins. cpuset is left out: a new v1 cpuset has no
# CPUs until someone writes them, and joining it fails.
JOIN_CONTROLLERS = ("cpu", "cpuacct", "memory", "blkio", "pids")
_counter = itertools.count()


def build_workload(directory: Path) -> Path:
    binary = directory / "workload"
    if not binary.exists():
        if shutil.which("gcc") is None:
            raise RuntimeError("gcc is needed to build the test workload (apt-get install gcc)")
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(WORKLOAD_SOURCE)], check=True)
    return binary


@dataclass
class FakePod:
    node: KernelNode
    name: str
    namespace: str
    uid: str
    doc: dict[str, Any]
    relpaths: dict[str, str]  # container name -> relpath; "" -> the pod's own cgroup

    def cgroup_dirs(self, container: str) -> list[Path]:
        rel = self.relpaths[container]
        dirs = [self.node.layout.unified_dir(rel)]
        for controller in JOIN_CONTROLLERS:
            if controller in self.node.layout.v1:
                dirs.append(self.node.layout.controller_dir(rel, controller))
        return dirs

    def cgroup_id(self, container: str = "app") -> int:
        return cgroups.cgroup_id(self.node.layout.unified_dir(self.relpaths[container]))

    def spawn(self, argv: list[str], container: str = "app", **kwargs: Any) -> subprocess.Popen:
        procs_files = [str(d / "cgroup.procs") for d in self.cgroup_dirs(container)]

        def join() -> None:  # runs in the child between fork and exec
            for path in procs_files:
                with open(path, "w") as fh:
                    fh.write("0")

        return subprocess.Popen(argv, preexec_fn=join, **kwargs)

    def run(self, argv: list[str], container: str = "app", timeout: float = 60, **kwargs: Any
            ) -> subprocess.CompletedProcess:
        proc = self.spawn(argv, container, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def workload(self, *args: Any, container: str = "app", check: bool = True) -> subprocess.CompletedProcess:
        result = self.run([str(self.node.workload), *map(str, args)], container)
        if check and result.returncode != 0:
            raise AssertionError(f"workload {args} failed ({result.returncode}): {result.stderr.decode()}")
        return result


@dataclass
class KernelNode:
    tmp: Path
    driver: str = "systemd"
    layout: cgroups.CgroupLayout = field(default_factory=cgroups.detect_layout)

    def __post_init__(self) -> None:
        n = next(_counter)
        suffix = f"{os.getpid()}x{n}"
        self.root = f"kpodtest{suffix}.slice" if self.driver == "systemd" else f"kpodtest{suffix}"
        self.kubelet = FakeKubelet().start()
        self.pods: dict[str, FakePod] = {}
        self.workload = build_workload(self.tmp)

    def add_pod(self, name: str, namespace: str = "default", labels: dict[str, str] | None = None,
                containers: tuple[str, ...] = ("app",), qos: str = "burstable") -> FakePod:
        uid = str(uuid.uuid4())
        ids = {c: f"containerd://{secrets.token_hex(32)}" for c in containers}
        doc = make_pod(name, namespace, uid, node="node-1", containers=ids, labels=labels or {}, qos=qos)
        relpaths = create_pod_cgroups(self.layout.unified, doc, qos, self.driver, root=self.root,
                                      v1=self.layout.v1)
        pod = FakePod(self, name, namespace, uid, doc, relpaths)
        self.pods[uid] = pod
        self.kubelet.add_pod(doc)
        return pod

    def remove_pod(self, pod: FakePod) -> None:
        self.kubelet.remove_pod(pod.uid)
        self._remove_dirs(pod)
        self.pods.pop(pod.uid, None)

    def _remove_dirs(self, pod: FakePod) -> None:
        for base in [self.layout.unified, *self.layout.v1.values()]:
            target = base / pod.relpaths[""]
            for _ in range(50):
                try:
                    remove_cgroup_tree(target)
                    break
                except OSError:  # exited tasks take a moment to leave the cgroup
                    time.sleep(0.05)

    def config(self, **fields: Any) -> AgentConfig:
        doc: dict[str, Any] = {
            "profile": "custom",
            "collectors": {},
            "namespaces": {"include": [], "exclude": []},
            "discovery": {
                "mode": "kubelet",
                "kubeletURL": self.kubelet.url,
                "interval": "200ms",
                "kubepodsRoots": [self.root],
            },
            "defaultInterval": "1s",
        }
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(doc.get(key), dict):
                doc[key] = {**doc[key], **value}
            else:
                doc[key] = value
        return config_from_dict(doc)

    def close(self) -> None:
        for pod in list(self.pods.values()):
            self.remove_pod(pod)
        for base in [self.layout.unified, *self.layout.v1.values()]:
            for _ in range(50):
                try:
                    remove_cgroup_tree(base / self.root)
                    break
                except OSError:
                    time.sleep(0.05)
        self.kubelet.close()


@contextlib.contextmanager
def kernel_node(tmp: Path) -> Iterator[KernelNode]:
    """A KernelNode for a test module, removed at exit; skips without a usable
    kernel (the root conftest turns that skip into a failure under CI)."""
    import pytest

    from tests.support.env import kernel_unavailable_reason

    reason = kernel_unavailable_reason()
    if reason:
        pytest.skip(reason)
    node = KernelNode(tmp)
    try:
        yield node
    finally:
        node.close()
