"""The agent with the capabilities the DaemonSet gives it, and without them.

The rendered DaemonSet drops every capability and adds CAP_BPF and
CAP_PERFMON only. Here the real `kpod-agent` runs under `setpriv` with exactly
that bounding set (uid 0, as in the pod): every collector must attach and
count exactly. With CAP_BPF or CAP_PERFMON taken away, the agent must say so
in its own words, not bcc's "Failed to compile BPF module".
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from kpod_agent import bpfload, config
from kpod_operator import model, render
from tests.support.kernel_node import KernelNode
from tests.support.running_agent import running_agent

SETPRIV = shutil.which("setpriv")
pytestmark = pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) not installed")


def _setpriv(bounding: str) -> list[str]:
    # --inh-caps=-all: nothing inherited; the bounding set then caps what uid 0 gets at exec.
    return [str(SETPRIV), "--inh-caps=-all", f"--bounding-set={bounding}"]


def _rendered_capabilities() -> list[str]:
    """The capabilities the operator's DaemonSet adds, as setpriv names them."""
    container = render.render_daemonset("kpod-system", model.parse_fleet({}), None)[
        "spec"]["template"]["spec"]["containers"][0]
    caps = container["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    return [name.lower() for name in caps["add"]]


def test_every_collector_attaches_and_counts_with_the_rendered_capabilities(
        node: KernelNode, tmp_path: Path) -> None:
    caps = _rendered_capabilities()
    assert caps == ["bpf", "perfmon"]
    pod = node.add_pod("least-a", "lp")
    neighbour = node.add_pod("least-b", "lp")
    with running_agent(node, tmp_path, 1, prefix=_setpriv(",".join(["-all", *(f"+{c}" for c in caps)])),
                       ready_timeout=300,
                       profile="comprehensive", syscalls=["getppid"],
                       collectors={"syscall": {"interval": "500ms"}}) as agent:
        status = agent.config()["collectors"]
        enabled = set(config.COLLECTOR_NAMES)
        assert {name for name, entry in status.items() if entry["attached"]} >= enabled, status
        n = 1013
        pod.workload("getppid", n)
        labels = {"namespace": "lp", "container": "app", "node": "node-1", "syscall": "getppid"}
        agent.wait(lambda: agent.metric("kpod_syscall_count_total", pod="least-a", **labels) >= n, "count")
        time.sleep(1.2)
        assert agent.metric("kpod_syscall_count_total", pod="least-a", **labels) == n
        assert agent.metric("kpod_syscall_count_total", pod="least-b", **labels) == 0
    node.remove_pod(neighbour)
    node.remove_pod(pod)


@pytest.mark.parametrize("dropped, missing", [
    ("-bpf,-perfmon,-sys_admin", "CAP_BPF, CAP_PERFMON"),
    ("-perfmon,-sys_admin", "CAP_PERFMON"),  # loads, then cannot attach its tracepoints
])
def test_a_missing_capability_is_reported_as_such(node: KernelNode, tmp_path: Path,
                                                   dropped: str, missing: str) -> None:
    with running_agent(node, tmp_path, 1, prefix=_setpriv(dropped), profile="custom", syscalls=["getppid"],
                       collectors={"syscall": {"enabled": True}}) as agent:
        entry = agent.config()["collectors"]["syscall"]
        assert entry["attached"] is False
        assert bpfload.PERMISSION_DENIED in entry["error"]
        assert f"missing {missing};" in entry["error"]
        assert "Failed to compile" not in entry["error"]
        log = agent.log.read_text()
        assert bpfload.PERMISSION_DENIED in log
