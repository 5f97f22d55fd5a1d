"""Agent RSS per profile.

The real `kpod-agent` process in standalone mode (discovery none) with each
profile, after its collectors are attached; baseline: the same Python with
the agent's modules and bcc imported and nothing loaded. (/metrics cost with
500 pods is in bench_comprehensive.py.)
    sudo .venv/bin/python -m bench.bench_agent [--profiles minimal,standard,comprehensive]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from bench.common import require_root, rss_mb, table
from tests.support.running_agent import free_port as _free_port


def agent_rss(profile: str, tmp: Path) -> tuple[float, float]:
    path = tmp / f"{profile}.yaml"
    path.write_text(yaml.safe_dump({"profile": profile, "discovery": {"mode": "none"},
                                    "collectors": {"syscall": {"enabled": profile == "comprehensive"}}}))
    port = _free_port()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "kpod_agent.main", "--config", str(path),
                             "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - started > 120:
                raise RuntimeError("agent did not become ready")
            time.sleep(0.2)
        ready = time.monotonic() - started
        time.sleep(3)  # a few collection cycles
        return rss_mb(proc.pid), ready
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def baseline_rss() -> float:
    proc = subprocess.Popen([sys.executable, "-c",
                             "import kpod_agent.agent, kpod_agent.exporter, bcc, time; time.sleep(30)"])
    time.sleep(4)
    try:
        return rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", default="minimal,standard,comprehensive")
    args = parser.parse_args()
    require_root()
    tmp = Path(tempfile.mkdtemp())
    base = baseline_rss()
    rows = [("profile", "RSS MB", "vs bare imports", "ready after")]
    rows.append(("(bare imports, no probes)", f"{base:.0f}", "1.00x", "-"))
    for profile in args.profiles.split(","):
        rss, ready = agent_rss(profile, tmp)
        rows.append((profile, f"{rss:.0f}", f"{rss / base:.2f}x", f"{ready:.1f} s"))
    table("Agent RSS (standalone, discovery none)", rows)
    print("targets: standard <= 150 MB, comprehensive <= 200 MB")


if __name__ == "__main__":
    main()
