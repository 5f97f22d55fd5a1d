"""Cluster-path tests that run the real agent: kernel tests (root, tracefs)."""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/cluster/" in str(item.fspath) and "node" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kernel)
