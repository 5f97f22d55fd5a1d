"""The shared fixtures, loaded as a pytest plugin by the root conftest.

- ``node``: a kubelet-like node of real cgroups under a private root, with a
  fake kubelet (module scope; skips without a usable kernel, which the root
  conftest turns into a failure under CI=true);
- ``cluster``: the emulated API server; ``harness``: the operator's view of
  it; ``operator``: the operator running against it.
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.support.emulator import EmulatedCluster
from tests.support.kernel_node import KernelNode, kernel_node
from tests.support.operator import Harness, RunningOperator


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelNode]:
    with kernel_node(tmp_path_factory.mktemp("node")) as made:
        yield made


@pytest.fixture()
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as emulated:
        yield emulated


@pytest.fixture()
def harness(cluster: EmulatedCluster, tmp_path: pathlib.Path) -> Iterator[Harness]:
    with Harness(cluster, tmp_path) as h:
        yield h


@pytest.fixture()
def operator(harness: Harness) -> RunningOperator:
    return harness.start()
