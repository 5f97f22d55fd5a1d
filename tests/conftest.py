"""Root of the test suite.

Kernel tests (marker `kernel`) load real BPF programs and need root. Outside
CI they skip with the reason; under CI=true (CI runs as root) a kernel test
that cannot run is a failure, never a silent skip.
"""
from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def kernel_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to load BPF programs and create cgroups"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is not importable (apt-get install python3-bpfcc; venv with --system-site-packages)"
    if not os.path.isdir("/sys/kernel/tracing/events") and not os.path.isdir("/sys/kernel/debug/tracing/events"):
        return "tracefs is not mounted"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is None:
        return
    reason = kernel_unavailable_reason()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"kernel test cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)
