"""The shared API emulator itself, through the kubernetes python client as the agent uses it."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import kubernetes.client
import kubernetes.watch
import pytest

from tests.support.emulator import EmulatedCluster, selector_matches
from tests.support.fake_kubelet import make_pod


@pytest.fixture()
def api() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as server:
        yield server


@pytest.fixture()
def core(api: EmulatedCluster) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api.api_client())


def _configmap(name: str, value: str, namespace: str = "kpod-system") -> dict:
    return {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": name, "namespace": namespace},
            "data": {"agent.yaml": value}}


def test_configmap_get_list_by_name(api: EmulatedCluster, core: kubernetes.client.CoreV1Api) -> None:
    api.apply(_configmap("kpod-agent-config", "generation: 1"))
    api.apply(_configmap("other", "x"))
    api.apply(_configmap("kpod-agent-config", "elsewhere", namespace="default"))
    cm = core.read_namespaced_config_map("kpod-agent-config", "kpod-system")
    assert cm.data == {"agent.yaml": "generation: 1"}
    listed = core.list_namespaced_config_map("kpod-system", field_selector="metadata.name=kpod-agent-config")
    assert [c.data["agent.yaml"] for c in listed.items] == ["generation: 1"]
    assert listed.metadata.resource_version == "3"
    with pytest.raises(kubernetes.client.ApiException) as err:
        core.read_namespaced_config_map("missing", "kpod-system")
    assert err.value.status == 404


def test_configmap_watch_with_the_client_watch(api: EmulatedCluster, core: kubernetes.client.CoreV1Api) -> None:
    api.apply(_configmap("kpod-agent-config", "generation: 1"))
    listed = core.list_namespaced_config_map("kpod-system", field_selector="metadata.name=kpod-agent-config")

    def edit() -> None:
        time.sleep(0.2)
        api.apply(_configmap("unrelated", "x"))
        api.apply(_configmap("kpod-agent-config", "generation: 2"))
        api.delete("configmaps", "kpod-system", "kpod-agent-config")

    threading.Thread(target=edit, daemon=True).start()
    events = []
    watch = kubernetes.watch.Watch()
    for event in watch.stream(core.list_namespaced_config_map, "kpod-system",
                              field_selector="metadata.name=kpod-agent-config",
                              resource_version=listed.metadata.resource_version, timeout_seconds=5):
        events.append((event["type"], event["object"].data["agent.yaml"]))
        if event["type"] == "DELETED":
            watch.stop()
    assert events == [("MODIFIED", "generation: 2"), ("DELETED", "generation: 2")]


def test_watch_resume_after_compaction_is_gone(api: EmulatedCluster, core: kubernetes.client.CoreV1Api) -> None:
    api.apply(make_pod("a"))
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    api.apply(make_pod("b"))
    # Before compaction: the history since `rv` is replayed.
    resp = core.list_pod_for_all_namespaces(watch=True, resource_version=rv, timeout_seconds=1, _preload_content=False)
    lines = [line for line in resp.read().decode().splitlines() if line]
    assert len(lines) == 1 and '"ADDED"' in lines[0] and '"b"' in lines[0]
    api.compact()
    resp = core.list_pod_for_all_namespaces(watch=True, resource_version=rv, timeout_seconds=1, _preload_content=False)
    body = resp.read().decode()
    assert '"code": 410' in body and '"ERROR"' in body


def test_watch_without_version_starts_with_the_state(api: EmulatedCluster, core: kubernetes.client.CoreV1Api) -> None:
    api.apply(make_pod("x", node="node-1"))
    api.apply(make_pod("y", node="node-2"))
    resp = core.list_pod_for_all_namespaces(watch=True, field_selector="spec.nodeName=node-2",
                                            timeout_seconds=1, _preload_content=False)
    started = time.monotonic()
    lines = [line for line in resp.read().decode().splitlines() if line]
    assert time.monotonic() - started < 3  # ended by timeoutSeconds
    assert len(lines) == 1 and '"y"' in lines[0]


def test_fail_with(api: EmulatedCluster, core: kubernetes.client.CoreV1Api) -> None:
    api.fail_with(503)
    with pytest.raises(kubernetes.client.ApiException) as err:
        core.list_pod_for_all_namespaces()
    assert err.value.status == 503
    api.fail_with(None)
    assert core.list_pod_for_all_namespaces().items == []


def test_only_served_kinds() -> None:
    with EmulatedCluster() as api, pytest.raises(ValueError, match="kind 'Secret' is not served"):
        api.apply({"kind": "Secret", "metadata": {"name": "s"}})


@pytest.mark.parametrize(("field", "label", "expected"), [
    ("spec.nodeName=node-1", "", True),
    ("spec.nodeName==node-1,metadata.namespace=default", "", True),
    ("spec.nodeName!=node-1", "", False),
    ("metadata.name=other", "", False),
    ("", "app=web", True),
    ("", "app!=web", False),
    ("", "app", True),
    ("", "!app", False),
    ("", "tier", False),
    ("", "app=web,tier!=db", True),
])
def test_selectors(field: str, label: str, expected: bool) -> None:
    pod = make_pod("p", node="node-1", labels={"app": "web"})
    assert selector_matches(pod, field, label) is expected
