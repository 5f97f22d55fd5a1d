"""The rendered ServiceMonitor, scraped by the real Prometheus as the
Prometheus Operator would configure it: the series keep the workload's
namespace/pod/container, every shipped recording rule groups by the workload
pods, and the agent that answered stays visible (``instance``, ``agent_pod``).

Prometheus is Debian's; its scrape config is what prometheus-operator's
generator makes of our ServiceMonitor (tests/cluster/prometheus_operator.py),
with file_sd carrying the ``__meta_kubernetes_*`` labels of the agent's
endpoint in place of the API server's discovery.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kpod_operator import model, render
from tests.cluster import prometheus_operator
from tests.support.kernel_node import FakePod, KernelNode
from tests.support.running_agent import free_port, running_agent
from tests.support.waiting import wait_for

OPERATOR_NS = "kpod-system"
AGENT_POD = "kpod-agent-x7k2p"
NODE = "node-1"
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)")


def _fleet() -> model.FleetSpec:
    # Scraped every second so that the test needs seconds, not minutes.
    return model.parse_fleet({"serviceMonitor": {"interval": "1s", "scrapeTimeout": "1s"}})


def prometheus_config(agent_url: str, directory: Path, rules: Path) -> dict[str, Any]:
    fleet = _fleet()
    sm = render.render_service_monitor(OPERATOR_NS, fleet, None)
    scrape = prometheus_operator.scrape_config(sm)
    service = render.render_service(fleet.agent.namespace, None)
    daemonset = render.render_daemonset(fleet.agent.namespace, fleet, None)
    address = urllib.parse.urlsplit(agent_url).netloc
    labels = prometheus_operator.endpoints_sd_labels(service, daemonset, AGENT_POD, NODE,
                                                     pod_ip=address.split(":")[0])
    # The discovery would only look in the namespaces the ServiceMonitor selects.
    assert labels["__meta_kubernetes_namespace"] in scrape.pop("kubernetes_sd_configs")[0]["namespaces"]["names"]
    targets = directory / "targets.json"
    targets.write_text(json.dumps([{"targets": [address], "labels": labels}]))
    scrape["file_sd_configs"] = [{"files": [str(targets)], "refresh_interval": "1s"}]
    return {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)], "scrape_configs": [scrape]}


def shipped_rules(directory: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The PrometheusRule asset's groups, evaluated every second instead of every 30 s."""
    groups = render.load_rule_groups()
    assert groups != render.DEFAULT_RULE_GROUPS, "the rules asset did not load"
    fast = [{**group, "interval": "1s"} for group in groups]
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": fast}))
    return path, [rule for group in groups for rule in group["rules"] if "record" in rule]


class Prometheus:
    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        path = directory / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        check = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [str(PROMETHEUS), f"--config.file={path}", f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT)

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def labels(self, expr: str, *names: str) -> set[tuple[str, ...]]:
        return {tuple(r["metric"].get(n, "") for n in names) for r in self.query(expr)}

    def wait(self, expr: str, what: str, timeout: float = 60) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]]:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-3000:]}")
            try:
                return self.query(expr)
            except OSError:
                return []  # not listening yet
        try:
            return wait_for(check, f"{what} ({expr})", timeout=timeout, interval=0.3)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{self.log.read_text()[-2000:]}") from None

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


WORKLOAD = {("shop", "web-a"), ("blog", "web-b")}
RULE_INPUTS = ("cpu", "syscall", "network", "tcpdrop", "biolatency", "l7")
HTTP_CLIENT = "import sys, urllib.request\nfor _ in range(5): urllib.request.urlopen(sys.argv[1]).read()\n"


@pytest.fixture(scope="module")
def pods(node: KernelNode) -> Iterator[dict[str, FakePod]]:
    made = {name: node.add_pod(name, ns, labels={"app": name}) for ns, name in sorted(WORKLOAD)}
    yield made
    for pod in made.values():
        node.remove_pod(pod)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _drive(pods: dict[str, FakePod]) -> None:
    """Activity behind every per-pod recording rule this machine can produce."""
    port = free_port()
    receiver = pods["web-b"].spawn([str(pods["web-b"].node.workload), "recv", str(port), str(1 << 20)],
                                   stdout=subprocess.PIPE)
    assert receiver.stdout is not None and receiver.stdout.readline().strip() == b"ready"
    pods["web-a"].workload("send", "127.0.0.1", port, 1 << 20)
    receiver.communicate(timeout=30)
    # HTTP from web-a to web-b: l7 requests on both sides (client and server).
    http_port = free_port()
    server = pods["web-b"].spawn([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(http_port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(pods["web-b"].node.tmp))
    try:
        wait_for(lambda: _listening(http_port), "the HTTP server", timeout=30, interval=0.1)
        got = pods["web-a"].run([sys.executable, "-c", HTTP_CLIENT, f"http://127.0.0.1:{http_port}/"])
        assert got.returncode == 0, got.stderr.decode()[-1000:]
    finally:
        server.terminate()
        server.wait(10)
    for pod in pods.values():
        pod.workload("getppid", 101)
        pod.workload("badclose", 7)
        pod.workload("sleep", 20, 1000)
        pod.workload("refused", "127.0.0.1", free_port(), 3, check=False)
        scratch = pod.node.tmp / f"io-{pod.name}"
        pod.workload("write", str(scratch), 4, 1)
        scratch.unlink()


@pytest.fixture(scope="module")
def scraped(node: KernelNode, pods: dict[str, FakePod],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, list[dict[str, Any]]]]:
    tmp = tmp_path_factory.mktemp("prom")
    # Only the collectors behind the shipped rules (each compile takes seconds on a busy machine).
    collectors = {name: {"enabled": True, "interval": "500ms"} for name in RULE_INPUTS}
    collectors["syscall"]["latency"] = True
    with running_agent(node, tmp, 1, ready_timeout=300, profile="custom", collectors=collectors,
                       syscalls=["getppid", "close", "connect"]) as agent:
        _drive(pods)
        rules, recording = shipped_rules(tmp)
        prom = Prometheus(prometheus_config(agent.url, tmp, rules), tmp)
        try:
            prom.wait('up{job="kpod-agent"} == 1', "the agent scraped")
            _drive(pods)  # increases between scrapes: rates are not all zero
            prom.wait("namespace_pod_syscall:kpod_syscall_count:rate5m > 0", "rules evaluated")
            yield prom, recording
        finally:
            prom.close()


def test_workload_labels_survive_the_scrape(scraped: tuple[Prometheus, list[dict[str, Any]]]) -> None:
    prom, _ = scraped
    assert prom.labels("sum by (namespace, pod) (kpod_syscall_count_total)", "namespace", "pod") == WORKLOAD
    assert prom.labels("sum by (namespace, pod, container) (kpod_cpu_context_switches_total)",
                       "namespace", "pod", "container") == {(ns, pod, "app") for ns, pod in WORKLOAD}
    # Nothing was renamed to exported_*: honorLabels kept ours.
    assert prom.query('{__name__=~"kpod_.+", exported_pod!=""}') == []
    assert prom.query('{__name__=~"kpod_.+", exported_namespace!=""}') == []


def test_the_agent_stays_identifiable(scraped: tuple[Prometheus, list[dict[str, Any]]]) -> None:
    prom, _ = scraped
    assert prom.labels("count by (instance, agent_pod, job) (kpod_syscall_count_total)",
                       "instance", "agent_pod", "job") == {(NODE, AGENT_POD, "kpod-agent")}
    # Self metrics carry no pod of their own: the target's (the agent's) labels stay.
    assert prom.labels("kpod_agent_config_generation", "namespace", "pod", "agent_pod") == {
        ("kpod-agents", AGENT_POD, AGENT_POD)}


def test_every_recording_rule_groups_by_the_workload_pods(
        scraped: tuple[Prometheus, list[dict[str, Any]]]) -> None:
    prom, recording = scraped
    # Rule names follow level:metric:operation; the level says what they group by.
    per_pod = [rule["record"] for rule in recording if rule["record"].startswith("namespace_pod")]
    node_wide = [rule["record"] for rule in recording if rule["record"] not in per_pod]
    assert len(per_pod) >= 12 and node_wide == ["map:kpod_bpf_map_fill:ratio"]
    got = {record: prom.labels(record, "namespace", "pod") for record in per_pod}
    assert {record: pods for record, pods in got.items() if pods != WORKLOAD} == {}
    # The node-wide rule keeps the agent's identity instead.
    for record in node_wide:
        assert prom.labels(record, "namespace", "pod") == {("kpod-agents", AGENT_POD)}
