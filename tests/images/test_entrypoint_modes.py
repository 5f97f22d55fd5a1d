"""The agent image's entrypoint: commands that need no kernel run without
the header search, and the kheaders module fallback says why it cannot run
instead of failing silently."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.assets.tools import REPO

SCRIPT = REPO / "docker" / "kpod-agent-entrypoint.sh"


def run_entrypoint(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The entrypoint with a stand-in kpod-agent and an empty host root: no
    headers anywhere, so anything that searches for them fails."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    agent = bin_dir / "kpod-agent"
    agent.write_text('#!/bin/sh\necho "ran: $*"\n')
    agent.chmod(0o755)
    (tmp_path / "host").mkdir(exist_ok=True)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "KPOD_HOST_ROOT": str(tmp_path / "host"),
           "KPOD_TMPDIR": str(tmp_path / "kpod-tmp"), "KPOD_NO_MODPROBE": "1"}
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("args", [["--version"], ["kpod-agent", "--help"], ["--print-bpf", "syscall"],
                                  ["kpod-agent", "top", "--url", "http://x:9090"], ["-h"]])
def test_commands_without_kernel_skip_the_header_search(tmp_path: Path, args: list[str]) -> None:
    out = run_entrypoint(tmp_path, *args)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ran: ")
    assert "no kernel headers" not in out.stderr
    assert not (tmp_path / "kpod-tmp").exists(), "a kernel-free command prepared BCC's TMPDIR"


def test_running_the_agent_still_needs_headers(tmp_path: Path) -> None:
    out = run_entrypoint(tmp_path, "--configmap", "kpod-system/kpod-agent-config")
    assert out.returncode == 1 and "ran:" not in out.stdout
    assert "no kernel headers found" in out.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs root and setpriv")
def test_modprobe_fallback_without_cap_sys_module_says_so() -> None:
    """The DaemonSet grants no CAP_SYS_MODULE: the log must say why kheaders
    is not loaded and what to do on the node."""
    script = f"source {SCRIPT}; kpod_load_kheaders"
    out = subprocess.run(["setpriv", "--inh-caps=-sys_module", "--bounding-set=-sys_module", "--",
                          "bash", "-c", script], capture_output=True, text=True)
    assert out.returncode == 0
    assert "needs CAP_SYS_MODULE" in out.stderr and "modprobe kheaders' on the node" in out.stderr
