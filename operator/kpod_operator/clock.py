"""Time as the operator sees it: status stamps, rollout age, resync waits.

One object passed in, so tests move time forward instead of sleeping
through a rollout timeout or a resync period. The leader Lease keeps its
own monotonic clock: jumping this one must never cost the lease.
"""
from __future__ import annotations

import asyncio
import datetime
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime.datetime:
        """Aware UTC time for status stamps and rollout ages."""

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Until ``event`` is set (True) or ``timeout`` seconds passed (False)."""


class RealClock:
    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class FakeClock:
    """Runs at real speed and jumps forward on ``advance`` (from any thread):
    waits whose deadline the jump passes end at once, stamps move with it.

    ``waits`` counts waits begun: the resync loop begins one after each pass,
    so a test that advances by the period and sees it grow knows a whole
    pass ran."""

    # How often a wait looks for a jump: short against the test periods (0.5 s).
    TICK = 0.02

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        self.waits = 0

    def _offset_now(self) -> float:
        with self._lock:
            return self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self._offset_now())

    def monotonic(self) -> float:
        return time.monotonic() + self._offset_now()

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        with self._lock:
            self.waits += 1
        deadline = self.monotonic() + timeout
        while not event.is_set():
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(event.wait(), min(remaining, self.TICK))
            except TimeoutError:
                pass
        return True
