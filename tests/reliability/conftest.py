"""Fixtures of the agent's reliability cases: a node made of real cgroups and
a fake kubelet (as in tests/bpf), and helpers to wait on the agent.

Modules that load BPF set `pytestmark = pytest.mark.kernel`; the root
conftest turns their skips into failures under CI=true.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.kernel_node import KernelNode


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelNode]:
    from tests.conftest import kernel_unavailable_reason

    if kernel_unavailable_reason():
        pytest.skip(kernel_unavailable_reason())  # a failure under CI (root conftest)
    kernel_node = KernelNode(tmp_path_factory.mktemp("node"))
    yield kernel_node
    kernel_node.close()


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> float:
    """Poll until `predicate()` is true; the seconds it took, or AssertionError."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")
