"""The agent's status annotation, written through the real kubernetes client."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from kpod_agent import node_status
from kpod_agent.contract import AgentStatus
from kpod_operator import status

from .emulator import EmulatedCluster

NS = "kpod-system"


def _report(generation: int, time: str = "2026-01-01T00:00:00Z", **collectors: Any) -> AgentStatus:
    return AgentStatus.model_validate({"node": "n1", "generation": generation,
                                       "collectors": collectors or {"cpu": {"attached": True}}, "time": time})


def test_patch_carries_the_report_as_json() -> None:
    report = _report(7, syscall={"attached": False, "error": "no tracepoint"})
    patch = node_status.build_annotation_patch(report)
    # The annotation key is part of the outside contract: spelled out here, not imported.
    text = patch["metadata"]["annotations"]["kpod.io/agent-status"]
    assert json.loads(text) == {"node": "n1", "generation": 7, "profile": None, "lastError": None,
                                "lastErrorTime": None, "appliedAt": None, "time": "2026-01-01T00:00:00Z",
                                "collectors": {"syscall": {"attached": False, "error": "no tracepoint"}},
                                "discovery": {"mode": None, "synced": False, "pods": 0, "cgroups": 0, "errors": 0,
                                              "lastError": None}}


@pytest.fixture()
def api() -> Iterator[tuple[EmulatedCluster, Any]]:
    cluster = EmulatedCluster()
    conf = kubernetes.client.Configuration()
    conf.host = cluster.url
    core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(conf))
    core.create_namespaced_pod(NS, {"apiVersion": "v1", "kind": "Pod",
                                    "metadata": {"name": "kpod-agent-abc", "namespace": NS,
                                                 "labels": {"app.kubernetes.io/name": "kpod-agent"}},
                                    "spec": {"nodeName": "n1", "containers": [{"name": "a", "image": "i"}]}})
    try:
        yield cluster, core
    finally:
        cluster.close()


def _patches(cluster: EmulatedCluster) -> int:
    return len(cluster.history("pods", NS, "kpod-agent-abc")) - 1


def test_publishes_only_changes_and_the_operator_reads_it(api: tuple[EmulatedCluster, Any]) -> None:
    cluster, core = api
    pub = node_status.PodStatusPublisher(core, "kpod-agent-abc", NS)
    assert pub.publish(_report(7)) is True
    # Same content, newer time: no write.
    assert pub.publish(_report(7, time="2026-01-01T00:00:30Z")) is False
    assert _patches(cluster) == 1
    assert pub.publish(_report(8)) is True
    assert _patches(cluster) == 2
    pod = core.read_namespaced_pod("kpod-agent-abc", NS).to_dict()
    pod = {"metadata": {"name": pod["metadata"]["name"], "annotations": pod["metadata"]["annotations"]},
           "spec": {"nodeName": "n1"}}
    rep = status.parse_report(pod)
    assert rep is not None and rep.generation == 8 and rep.node == "n1"
    assert pod["metadata"]["annotations"]  # labels and other metadata untouched by the patch


def test_api_errors_are_counted_not_raised(api: tuple[EmulatedCluster, Any]) -> None:
    _, core = api
    pub = node_status.PodStatusPublisher(core, "no-such-pod", NS)
    assert pub.publish(_report(7)) is False
    assert pub.errors == 1
    assert "404" in (pub.last_error or "")
    # Not remembered as written: retried on the next publish.
    assert pub.publish(_report(7)) is False
    assert pub.errors == 2


def test_disabled_without_pod_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)

    class Boom:
        def patch_namespaced_pod(self, *a: Any) -> None:
            raise AssertionError("must not be called")

    pub = node_status.PodStatusPublisher(Boom())
    assert not pub.enabled
    assert pub.publish(_report(1)) is False


def test_pod_identity_from_the_downward_api_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "kpod-agent-xyz")
    monkeypatch.setenv("POD_NAMESPACE", NS)
    calls = []

    class Recorder:
        def patch_namespaced_pod(self, name: str, namespace: str, body: dict[str, Any]) -> None:
            calls.append((name, namespace))

    assert node_status.PodStatusPublisher(Recorder()).publish(_report(3)) is True
    assert calls == [("kpod-agent-xyz", NS)]
