"""Cluster-path tests that run the real agent: kernel tests (root, tracefs)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.kernel_node import KernelNode


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/cluster/" in str(item.fspath) and "node" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelNode]:
    from tests.conftest import kernel_unavailable_reason

    if kernel_unavailable_reason():
        pytest.skip(kernel_unavailable_reason())  # the root conftest turns this into a failure in CI
    kernel_node = KernelNode(tmp_path_factory.mktemp("node"))
    yield kernel_node
    kernel_node.close()
