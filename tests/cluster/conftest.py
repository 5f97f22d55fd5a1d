"""Cluster-path tests that run the real agent: kernel tests (root, tracefs)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.kernel_node import KernelNode, kernel_node


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/cluster/" in str(item.fspath) and "node" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelNode]:
    with kernel_node(tmp_path_factory.mktemp("node")) as made:
        yield made
