"""Root of the test suite.

Kernel tests (marker `kernel`) load real BPF programs and need root. Outside
CI they skip with the reason; under CI=true (CI runs as root) a kernel test
that cannot run is a failure, never a silent skip; every test that uses the
`node` fixture (real cgroups) is one. The shared fixtures live in
tests/support/fixtures.py.
"""
from __future__ import annotations

import pytest

from tests.support.env import IN_CI, kernel_unavailable_reason

# The shared fixtures, and the operator reliability cases' (a faulty API server).
pytest_plugins = ["tests.support.fixtures", "tests.reliability.operator_support"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test on a node of real cgroups is a kernel test wherever it lives, so
    # under CI it cannot skip for want of root.
    for item in items:
        if "node" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kernel)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is None:
        return
    reason = kernel_unavailable_reason()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"kernel test cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)
