"""The real `kpod-agent` command: file config watched, endpoints, exact
counts over HTTP, reload without restart, bad config kept out, clean exit."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from tests.support.kernel_node import FakePod, KernelNode
from tests.support.running_agent import RunningAgent, loaded_prog_ids, prog_ids_of, running_agent


@pytest.fixture(scope="module")
def pod(node: KernelNode) -> FakePod:
    return node.add_pod("cli-a", "cli", labels={"app": "cli"})


@pytest.fixture(scope="module")
def running(node: KernelNode, pod: FakePod, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    with running_agent(node, tmp_path_factory.mktemp("cli"), 1,
                       collectors={"cpu": {"interval": "500ms"}, "syscall": {"interval": "500ms"}},
                       syscalls=["getppid"]) as agent:
        yield agent


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
    # applied by the file watcher, well within its deadline (a second on an idle machine)
    running.wait(lambda: running.config()["generation"] == 2, "generation 2", 5)
    status = running.config()
    assert "syscall" not in status["collectors"] and status["collectors"]["memory"]["attached"]
    assert running.proc.pid == pid and running.proc.poll() is None
    assert running.metric("kpod_cpu_context_switches_total", **labels) >= switches  # not reset
    assert running.metric("kpod_syscall_count_total") == 0


def test_bad_file_keeps_last_good_and_sighup_rereads(running: RunningAgent) -> None:
    errors_before = running.metric("kpod_config_reloads_total", result="error")
    bad = running.path.with_suffix(".bad")
    bad.write_text("collectors: {cpu: {interval: whenever}}\n")
    os.replace(bad, running.path)  # whole, as editors do: the watcher never sees half a file
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


def test_cluster_label_on_every_series_and_build_info(node: KernelNode, tmp_path) -> None:
    """clusterName set: every series of both exposition formats carries
    cluster="..."; counting stays exact; kpod_build_info names the versions."""
    pod = node.add_pod("cli-c", "cli", labels={"app": "cli"})
    with running_agent(node, tmp_path, 1, clusterName='prod "eu"', collectors={"syscall": {"interval": "500ms"}},
                       syscalls=["getppid"]) as agent:
        n = 211
        pod.workload("getppid", n)
        labels = {"cluster": 'prod "eu"', "namespace": "cli", "pod": "cli-c", "syscall": "getppid"}
        agent.wait(lambda: agent.metric("kpod_syscall_count_total", **labels) >= n, "count with cluster label")
        time.sleep(1.2)
        assert agent.metric("kpod_syscall_count_total", **labels) == n
        text = agent.get("/metrics")[1]
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        assert samples and all(s.labels.get("cluster") == 'prod "eu"' for s in samples)
        build = [s for s in samples if s.name == "kpod_build_info"]
        assert len(build) == 1 and build[0].value == 1
        assert build[0].labels["version"] and build[0].labels["python"] and build[0].labels["bcc"]
        req = urllib.request.Request(agent.url + "/metrics",
                                     headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            om = resp.read().decode()
        om_samples = [s for f in openmetrics_parser.text_string_to_metric_families(om) for s in f.samples]
        assert om_samples and all(s.labels.get("cluster") == 'prod "eu"' for s in om_samples)
        promtool = shutil.which("promtool")
        assert promtool
        result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
