"""Runs every benchmark in turn (sudo make bench)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for module in ("bench.bench_syscall", "bench.bench_reload", "bench.bench_agent", "bench.bench_operator",
               "bench.bench_comprehensive", "bench.bench_scrape", "bench.bench_topology",
               "bench.bench_l7"):
    if not (ROOT / (module.replace(".", "/") + ".py")).exists():
        continue
    print(f"\n# {module}", flush=True)
    code = subprocess.call([sys.executable, "-m", module], cwd=ROOT)
    if code:
        print(f"{module} failed with exit code {code}", file=sys.stderr)
