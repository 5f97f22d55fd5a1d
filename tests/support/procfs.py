"""Figures of a running process read from /proc."""
from __future__ import annotations

from pathlib import Path


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of `pid` in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")
