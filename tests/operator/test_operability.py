"""Running the operator: its own metrics, the Prometheus Operator arriving
late, the CLI's logs and /metrics, and uninstalling with `kubectl delete -k`."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from kpod_operator import render

from . import emulator
from .conftest import AGENTS, NS, Harness, RunningOperator, wait_for
from tests.support.kubeconfig import write_kubeconfig

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DS_PATH = f"/apis/apps/v1/namespaces/{AGENTS}/daemonsets/kpod-agent"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _fleet_ready(h: Harness, spec: dict[str, Any] | None = None) -> None:
    h.apply_cr(NS, "default", spec or {"profile": "standard"})
    wait_for(lambda: h.configmap() and h.daemonset() and
             (h.cr(NS, "default").get("status") or {}).get("configGeneration") == 1, what="first reconcile")


def test_monitoring_objects_appear_within_5s_of_the_crds(harness: Harness) -> None:
    harness.config.resync_seconds = 60.0  # only the CRD watch can be quick
    harness.start()
    _fleet_ready(harness)
    harness.resync()  # not served yet: a resync makes none
    assert harness.cluster.objects("servicemonitors") == []
    installed = time.monotonic()
    harness.cluster.install_monitoring()
    wait_for(lambda: len(harness.cluster.objects("servicemonitors")) == 2
             and harness.cluster.objects("prometheusrules"), timeout=10, what="monitoring objects")
    elapsed = time.monotonic() - installed
    print(f"\nServiceMonitors and PrometheusRule {elapsed:.2f} s after the CRDs appeared")
    assert elapsed < 5.0
    names = sorted(sm["metadata"]["name"] for sm in harness.cluster.objects("servicemonitors"))
    assert names == ["kpod-agent", "kpod-operator"]
    operator_sm = next(sm for sm in harness.cluster.objects("servicemonitors")
                       if sm["metadata"]["name"] == "kpod-operator")
    # It selects the Service shipped in deploy/operator/service.yaml, by port name.
    service = yaml.safe_load((DEPLOY / "operator" / "service.yaml").read_text())
    assert operator_sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert operator_sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_operator_metrics_count_reconciles_errors_fleet_and_leadership(harness: Harness) -> None:
    running = harness.start()
    _fleet_ready(harness)
    harness.apply_cr("team-a", "metrics", {"profile": "minimal"})
    wait_for(lambda: harness.condition("team-a", "metrics", "Reconciled"), what="override merged")
    ds = harness.daemonset()
    harness.kube.merge_patch(f"{DS_PATH}/status", {"status": {
        "observedGeneration": ds["metadata"]["generation"], "desiredNumberScheduled": 3,
        "updatedNumberScheduled": 3, "numberAvailable": 3, "numberReady": 3}})
    wait_for(lambda: _value(_samples(running.metrics.render().decode()), "kpod_operator_nodes_desired") == 3,
             what="nodes desired")
    harness.cluster.fail_writes("daemonsets", 403)
    harness.apply_cr(NS, "default", {"agent": {"image": "kpod-agent:2"}})
    wait_for(lambda: (_value(_samples(running.metrics.render().decode()), "kpod_operator_api_errors_total",
                             verb="patch", code="403") or 0) >= 1, what="API error counted")
    wait_for(lambda: (_value(_samples(running.metrics.render().decode()), "kpod_operator_reconciles_total",
                             result="apply_failed") or 0) >= 1, what="failed reconcile counted")
    harness.cluster.fail_writes("daemonsets", None)
    samples = _samples(running.metrics.render().decode())
    assert _value(samples, "kpod_operator_reconciles_total", result="success") >= 1
    assert _value(samples, "kpod_operator_reconcile_duration_seconds_count") >= 2
    assert _value(samples, "kpod_operator_fleet_profiles") == 1
    assert _value(samples, "kpod_operator_namespace_overrides") == 1
    assert _value(samples, "kpod_operator_nodes_applied") == 0  # no agent reported yet
    assert _value(samples, "kpod_operator_leader") == 1
    assert _value(samples, "kpod_operator_queue_depth") is not None
    build = [labels for (name, labels) in samples if name == "kpod_build_info"]
    assert len(build) == 1 and dict(build[0])["version"] and dict(build[0])["python"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_logs_json_and_serves_metrics(harness: Harness, tmp_path: pathlib.Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", harness.cluster.url)
    port = _free_port()
    exe = pathlib.Path(sys.executable).parent / "kpod-operator"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KPOD_RESYNC_SECONDS": "1"}
    proc = subprocess.Popen([str(exe), "--namespace", NS, "--listen", f"127.0.0.1:{port}",
                             "--log-format", "json", "--log-level", "info"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        harness.apply_cr(NS, "default", {"profile": "minimal"})
        wait_for(lambda: harness.configmap(), timeout=20, what="configmap from the CLI operator")

        def scraped() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                return resp.read().decode()
        wait_for(lambda: _value(_samples(scraped()), "kpod_operator_leader") == 1, timeout=10, what="leader 1")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    lines = [line for line in out.splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(d) for d in docs)
    assert any(d["message"].startswith("became the leader") for d in docs)
    assert any(d["message"] == "released the lease" for d in docs)


def _kustomize(path: pathlib.Path = DEPLOY) -> list[dict[str, Any]]:
    """The objects of `kubectl apply -k path` (resources only: what deploy/ uses)."""
    kust = yaml.safe_load((path / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for entry in kust["resources"]:
        target = (path / entry).resolve()
        if target.is_dir():
            docs += _kustomize(target)
        else:
            docs += [d for d in yaml.safe_load_all(target.read_text()) if d]
    return docs


def _all_objects(h: Harness) -> list[tuple[str, str | None, str]]:
    # Events expire on their own (the API server's --event-ttl, 1 h by default).
    plurals = {res.rsplit("/", 1)[1] for res, *_ in emulator.RESOURCES + emulator.MONITORING_RESOURCES} - {"events"}
    return [(p, o["metadata"].get("namespace"), o["metadata"]["name"]) for p in sorted(plurals)
            for o in h.cluster.objects(p)]


def test_kubectl_delete_k_leaves_nothing_behind_without_the_operator(harness: Harness) -> None:
    """`kubectl apply -k deploy/`, the samples, the Prometheus Operator CRDs;
    the operator does its work and is gone before `kubectl delete -k deploy/`
    (deleted first, as kubectl may do, or crashed): the namespace and CRD
    deletions plus the garbage collector remove everything, the cluster-scoped
    RBAC of the agents included (owned by the CRD)."""
    h = harness
    installed = _kustomize()
    for doc in installed:
        if doc["kind"] == "Namespace":
            h.cluster.create_namespace(doc["metadata"]["name"])
        else:
            h.kube.create(doc)
    h.cluster.install_monitoring()
    h.start()
    for sample in sorted((DEPLOY / "samples").glob("*.yaml")):
        for doc in yaml.safe_load_all(sample.read_text()):
            if doc:
                h.apply_cr(doc["metadata"]["namespace"], doc["metadata"]["name"], doc["spec"])
    wait_for(lambda: h.configmap() and h.daemonset() and len(h.cluster.objects("servicemonitors")) == 2
             and (h.get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{render.AGENT_NAME}-{NS}") or {})
             .get("metadata", {}).get("ownerReferences"), timeout=20, what="fleet up, RBAC owned by the CRD")
    h.stop()  # the operator is gone
    before = _all_objects(h)
    assert ("clusterrolebindings", None, f"{render.AGENT_NAME}-{NS}") in before
    for doc in reversed(installed):
        if doc["kind"] == "Namespace":
            h.cluster.delete_namespace(doc["metadata"]["name"])
            continue
        path = h.kube.resource_path(doc)
        if h.get(path) is not None:
            h.kube.delete(path)
    left = [o for o in _all_objects(h) if o[0] != "customresourcedefinitions"
            or not o[2].endswith("monitoring.coreos.com")]  # the Prometheus Operator's, not ours
    assert left == [], left
    assert len(before) > 15


def test_upgrade_keeps_agents_running(harness: Harness) -> None:
    """A new operator version (another process, same manifests) takes over and
    changes no object: the DaemonSet's generation and template stay, so no
    agent restarts when only the operator changed."""
    first = harness.start()
    _fleet_ready(harness)
    ds = harness.daemonset()
    cm = harness.configmap()
    harness.stop()
    assert first.errors == []
    second = RunningOperator(harness.cluster.url, harness.config, harness.clock)
    harness.operator = second
    harness.resync(4)  # several resyncs of the new operator
    after = harness.daemonset()
    assert after["metadata"]["generation"] == ds["metadata"]["generation"]
    assert after["metadata"]["resourceVersion"] == ds["metadata"]["resourceVersion"]
    assert harness.configmap()["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]
