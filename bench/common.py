"""Shared bench helpers: build C helpers, run as a fake pod, print tables.

Benchmarks print ratios against a baseline measured in the same run: this
machine is small and noisy, so absolute figures move between runs while
ratios hold.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORK = Path(tempfile.mkdtemp(prefix="kpod-bench-"))


def build(name: str) -> Path:
    binary = WORK / name
    if not binary.exists():
        if shutil.which("gcc") is None:
            sys.exit("gcc is needed for the benchmarks (apt-get install gcc)")
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(ROOT / "bench" / f"{name}.c")], check=True)
    return binary


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("benchmarks load BPF programs: run as root")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def table(title: str, rows: list[tuple[str, ...]]) -> None:
    print(f"\n## {title}\n")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        print("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
