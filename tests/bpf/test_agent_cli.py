"""The real `kpod-agent` command: file config watched, endpoints, exact
counts over HTTP, reload without restart, bad config kept out, clean exit."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.kernel_node import FakePod, KernelNode

AGENT = [sys.executable, "-m", "kpod_agent.main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loaded_prog_ids() -> set[int]:
    out = subprocess.run(["bpftool", "prog", "list", "--json"], capture_output=True, check=True).stdout
    return {prog["id"] for prog in json.loads(out)}


def prog_ids_of(pid: int) -> set[int]:
    """BPF programs a process holds, from its fds' fdinfo (other tests and
    processes on the machine load programs too: a global count proves nothing)."""
    ids = set()
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = fdinfo.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


class RunningAgent:
    def __init__(self, node: KernelNode, tmp: Path) -> None:
        self.node = node
        self.path = tmp / "agent.yaml"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "agent.log"

    def write(self, generation: int, **fields: Any) -> None:
        doc = self.node.config(generation=generation, **fields).model_dump(mode="json", exclude_none=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc))
        os.replace(tmp, self.path)  # atomic, as editors and ConfigMap volumes do

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*AGENT, "--config", str(self.path), "--listen", f"127.0.0.1:{self.port}", "--node-name", "node-1"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        self.wait(lambda: self.get("/readyz")[0] == 200, "agent ready", 30)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def config(self) -> dict[str, Any]:
        return json.loads(self.get("/config")[1])

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for family in text_string_to_metric_families(self.get("/metrics")[1]):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def wait(self, predicate: Any, what: str, timeout: float = 10) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}): {self.log.read_text()[-3000:]}")
            if predicate():
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; log:\n{self.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def pod(node: KernelNode) -> FakePod:
    return node.add_pod("cli-a", "cli", labels={"app": "cli"})


@pytest.fixture(scope="module")
def running(node: KernelNode, pod: FakePod, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    agent = RunningAgent(node, tmp_path_factory.mktemp("cli"))
    agent.write(1, collectors={"cpu": {"interval": "500ms"}, "syscall": {"interval": "500ms"}},
                syscalls=["getppid"])
    agent.start()
    yield agent
    if agent.proc.poll() is None:
        agent.proc.kill()
        agent.proc.wait()


def test_exact_count_over_http(running: RunningAgent, pod: FakePod) -> None:
    n = 1009
    pod.workload("getppid", n)
    labels = {"namespace": "cli", "pod": "cli-a", "container": "app", "node": "node-1", "syscall": "getppid"}
    running.wait(lambda: running.metric("kpod_syscall_count_total", **labels) >= n, "count to appear")
    time.sleep(1.2)  # two more collection cycles: the figure must not move
    assert running.metric("kpod_syscall_count_total", **labels) == n


def test_endpoints(running: RunningAgent) -> None:
    assert running.get("/healthz")[0] == 200
    assert running.get("/readyz")[0] == 200
    status = running.config()
    assert status["generation"] == 1 and status["collectors"]["syscall"]["attached"] is True
    assert running.get("/nope")[0] == 404
    assert running.get("/metrics?x=1")[0] == 200
    # a malformed request line gets an error, and the agent keeps serving
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as s:
        s.sendall(b"\x00\xffGARBAGE / HTTP/9\r\n\r\n")
        s.recv(1024)
    assert running.get("/healthz")[0] == 200


def test_promtool_checks_http_scrape(running: RunningAgent) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus"
    text = running.get("/metrics")[1]
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_file_edit_applies_without_restart(running: RunningAgent, pod: FakePod) -> None:
    pid = running.proc.pid
    pod.workload("sleep", 30, 100)
    labels = {"namespace": "cli", "pod": "cli-a", "container": "app"}
    running.wait(lambda: running.metric("kpod_cpu_context_switches_total", **labels) >= 30, "cpu counts")
    switches = running.metric("kpod_cpu_context_switches_total", **labels)
    running.write(2, collectors={"cpu": {"interval": "500ms"}, "memory": {"interval": "500ms"}},
                  syscalls=["getppid"])
    took = running.wait(lambda: running.config()["generation"] == 2, "generation 2", 5)
    assert took < 1.5, f"config took {took:.2f}s to apply"
    status = running.config()
    assert "syscall" not in status["collectors"] and status["collectors"]["memory"]["attached"]
    assert running.proc.pid == pid and running.proc.poll() is None
    assert running.metric("kpod_cpu_context_switches_total", **labels) >= switches  # not reset
    assert running.metric("kpod_syscall_count_total") == 0


def test_bad_file_keeps_last_good_and_sighup_rereads(running: RunningAgent) -> None:
    errors_before = running.metric("kpod_config_reloads_total", result="error")
    running.path.write_text("collectors: {cpu: {interval: whenever}}\n")
    running.wait(lambda: running.metric("kpod_config_reloads_total", result="error") > errors_before, "error count")
    status = running.config()
    assert status["generation"] == 2
    assert "collectors.cpu.interval" in status["lastError"]
    success = running.metric("kpod_config_reloads_total", result="success")
    running.write(3, collectors={"cpu": {"interval": "500ms"}}, syscalls=["getppid"])
    running.wait(lambda: running.config()["generation"] == 3, "generation 3")
    running.proc.send_signal(signal.SIGHUP)
    running.wait(lambda: running.metric("kpod_config_reloads_total", result="success") >= success + 2,
                 "SIGHUP re-read")


def test_sigterm_detaches_every_probe(running: RunningAgent) -> None:
    held = prog_ids_of(running.proc.pid)
    assert held and held <= loaded_prog_ids()
    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(timeout=15) == 0
    assert not held & loaded_prog_ids()
    log = running.log.read_text()
    assert "shutting down: detaching probes" in log and "collector cpu detached" in log
