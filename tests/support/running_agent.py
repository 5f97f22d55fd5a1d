"""The real `kpod-agent` command run by a test: its config file, HTTP
endpoints, and the BPF programs it holds."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.kernel_node import KernelNode
from tests.support.waiting import wait_for

AGENT = [sys.executable, "-m", "kpod_agent.main"]


def free_port() -> int:
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
    def __init__(self, node: KernelNode, tmp: Path, prefix: list[str] | None = None) -> None:
        self.node = node
        self.prefix = prefix or []  # e.g. setpriv with fewer capabilities
        self.path = tmp / "agent.yaml"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "agent.log"

    def write(self, generation: int, **fields: Any) -> None:
        doc = self.node.config(generation=generation, **fields).model_dump(mode="json", exclude_none=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc))
        os.replace(tmp, self.path)  # atomic, as editors and ConfigMap volumes do

    def launch(self) -> None:
        """Start the command on the config file; output goes to `log`."""
        with self.log.open("wb") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [*self.prefix, *AGENT, "--config", str(self.path), "--listen", f"127.0.0.1:{self.port}",
                 "--node-name", "node-1"], stdout=out, stderr=subprocess.STDOUT)

    def start(self, ready_timeout: float = 30) -> None:
        self.launch()
        self.wait(lambda: self.get("/readyz")[0] == 200, "agent ready", ready_timeout)

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
        """wait_for(predicate) while the agent runs (its exit fails at once);
        the seconds it took."""
        start = time.monotonic()

        def check() -> Any:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited ({self.proc.returncode}): {self.log.read_text()[-3000:]}")
            return predicate()
        try:
            wait_for(check, what, timeout=timeout, interval=0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{self.log.read_text()[-3000:]}") from None
        return time.monotonic() - start



@contextlib.contextmanager
def running_agent(node: KernelNode, tmp: Path, generation: int = 1, prefix: list[str] | None = None,
                  ready_timeout: float = 30, kind: type[RunningAgent] | None = None,
                  **fields: Any) -> Iterator[RunningAgent]:
    """An agent (of ``kind``, default RunningAgent) started on a config written
    from `fields`, killed at exit if still running."""
    agent = (kind or RunningAgent)(node, tmp, prefix)
    agent.write(generation, **fields)
    agent.start(ready_timeout)
    try:
        yield agent
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()
