"""Every test in this directory loads the real collectors into this kernel."""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/bpf/" in str(item.fspath):
            item.add_marker(pytest.mark.kernel)
