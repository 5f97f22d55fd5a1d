"""Polling for a condition that another thread or process brings about."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], what: str = "condition", *, timeout: float = 10.0,
             interval: float = 0.02) -> T:
    """Poll until ``check()`` is truthy and return that value. An assertion or
    lookup error inside ``check`` counts as "not yet"; on timeout the last value
    or error is in the message, so a failure says how far it got."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, KeyError, TypeError, IndexError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")
        time.sleep(interval)
