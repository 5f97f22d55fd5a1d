"""log2 histogram slots -> Prometheus cumulative buckets. Pure.

Slot s of a BPF histogram counts values v with 2^(s-1) < v <= 2^s units
(slot 0: v <= 1); the last slot also takes everything larger, so it only
feeds +Inf. Buckets outside the configured [min, max] range are left out:
cumulative buckets stay correct when some are omitted, and a bounded range
bounds the series per histogram.
"""
from __future__ import annotations

from collections.abc import Sequence


def log2_to_buckets(
    slots: Sequence[int],
    unit_seconds: float,
    min_le: float = 0.0,
    max_le: float = float("inf"),
) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs, sorted, '+Inf' last (prometheus_client's shape)."""
    buckets: list[tuple[str, float]] = []
    running = 0
    last = len(slots) - 1
    for slot, count in enumerate(slots):
        running += count
        if slot == last:
            break
        le = (2 ** slot) * unit_seconds
        if min_le <= le <= max_le:
            buckets.append((format_le(le), float(running)))
    total = sum(slots)
    buckets.append(("+Inf", float(total)))
    return buckets


def format_le(value: float) -> str:
    # Shortest repr that round-trips, as prometheus_client prints floats.
    return repr(float(value))


def merge_slots(a: Sequence[int], b: Sequence[int]) -> list[int]:
    if len(a) < len(b):
        a, b = b, a
    merged = list(a)
    for i, count in enumerate(b):
        merged[i] += count
    return merged
