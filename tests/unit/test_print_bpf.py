"""`kpod-agent --print-bpf NAME` prints the C each collector compiles, with its flags."""
from __future__ import annotations

import subprocess
import sys

import pytest

from kpod_agent.collectors import REGISTRY

BPF_COLLECTORS = [name for name, cls in REGISTRY.items() if getattr(cls, "source", None)]


@pytest.mark.parametrize("name", BPF_COLLECTORS)
def test_prints_the_compiled_text(name: str) -> None:
    out = subprocess.run([sys.executable, "-m", "kpod_agent.main", "--print-bpf", name],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, _, body = out.stdout.partition("\n")
    assert first.startswith(f"// {REGISTRY[name].source} as compiled, with: -DKPOD_MAX_CGROUPS=")  # type: ignore[attr-defined]
    assert '#include "' not in body  # our header is inlined, as bcc gets it
    assert "TRACEPOINT_PROBE" in body or "int sys_exit" in body


def test_unknown_name_lists_the_collectors() -> None:
    out = subprocess.run([sys.executable, "-m", "kpod_agent.main", "--print-bpf", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "cpu" in out.stderr and "Traceback" not in out.stderr
