"""The agent's ConfigMap source against an emulated API server: list, watch,
re-list after 410, no loss of the last good config on errors."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kpod_agent.kube import ConfigMapSource
from tests.support.emulator import EmulatedCluster
from tests.support.waiting import wait_for


def configmap(data: str | None, name: str = "kpod-agent-config") -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name, "namespace": "kpod-system"}}
    if data is not None:
        obj["data"] = {"agent.yaml": data}
    return obj


class Sink:
    def __init__(self) -> None:
        self.docs: list[bytes] = []
        self.errors: list[str] = []
        self.changed = threading.Event()

    def submit(self, data: bytes, source: str) -> bool:
        self.docs.append(data)
        self.changed.set()
        return True

    def reject(self, message: str) -> None:
        self.errors.append(message)
        self.changed.set()


@pytest.fixture
def api() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as server:
        yield server


def test_initial_list_then_watch_updates(api: EmulatedCluster) -> None:
    api.apply(configmap("generation: 1"))
    api.apply(configmap("generation: 99", name="someone-else"))
    sink = Sink()
    source = ConfigMapSource(api.api_client(), "kpod-system", "kpod-agent-config", sink.submit, sink.reject)
    source.start()
    try:
        wait_for(lambda: sink.docs == [b"generation: 1"])
        api.apply(configmap("generation: 2"))
        wait_for(lambda: sink.docs[-1:] == [b"generation: 2"])
        # an update that leaves agent.yaml unchanged is not re-applied
        obj = configmap("generation: 2")
        obj["metadata"]["labels"] = {"touched": "yes"}
        api.apply(obj)
        time.sleep(0.3)
        assert sink.docs == [b"generation: 1", b"generation: 2"]
    finally:
        source.stop()


def test_expired_watch_relists(api: EmulatedCluster) -> None:
    api.apply(configmap("generation: 1"))
    sink = Sink()
    source = ConfigMapSource(api.api_client(), "kpod-system", "kpod-agent-config", sink.submit, sink.reject)
    source.start()
    try:
        wait_for(lambda: sink.docs == [b"generation: 1"])
        api.expire_watches()
        api.apply(configmap("generation: 3"))
        wait_for(lambda: sink.docs[-1:] == [b"generation: 3"])
    finally:
        source.stop()


def test_api_errors_retry_and_keep_last(api: EmulatedCluster) -> None:
    api.apply(configmap("generation: 1"))
    sink = Sink()
    source = ConfigMapSource(api.api_client(), "kpod-system", "kpod-agent-config", sink.submit, sink.reject,
                             retry_seconds=0.05, max_retry_seconds=0.2)
    source.start()
    try:
        wait_for(lambda: sink.docs == [b"generation: 1"])
        api.fail_with(500)
        api.expire_watches()
        wait_for(lambda: source.errors_total >= 2)
        assert sink.docs == [b"generation: 1"]
        api.fail_with(None)
        api.apply(configmap("generation: 4"))
        wait_for(lambda: sink.docs[-1:] == [b"generation: 4"])
    finally:
        source.stop()


def test_missing_key_is_reported_not_applied(api: EmulatedCluster) -> None:
    api.apply(configmap(None))
    sink = Sink()
    source = ConfigMapSource(api.api_client(), "kpod-system", "kpod-agent-config", sink.submit, sink.reject)
    source.start()
    try:
        wait_for(lambda: bool(sink.errors))
        assert "agent.yaml" in sink.errors[0] and sink.docs == []
    finally:
        source.stop()
