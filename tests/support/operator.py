"""The operator run in-process against the emulated API server, and a
harness that reads and writes its objects as kubectl would."""
from __future__ import annotations

import asyncio
import pathlib
import threading
from typing import Any, Self

import kopf

from kpod_operator import clock as opclock
from kpod_operator import kube as kubeapi
from kpod_operator import leader, main, settings
from kpod_operator import metrics as opmetrics
from tests.support.emulator import EmulatedCluster
from tests.support.waiting import wait_for

NS = "kpod-system"
AGENTS = "kpod-agents"  # the fleet's default spec.agent.namespace
CR_PATH = "/apis/kpod.io/v1alpha1"


class RunningOperator:
    """kopf in-process, in its own thread and loop, against the emulator."""

    def __init__(self, url: str, config: settings.OperatorConfig,
                 clock: opclock.Clock | None = None) -> None:
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.errors: list[BaseException] = []
        self.metrics = opmetrics.OperatorMetrics()
        registry = kopf.OperatorRegistry()

        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=url, insecure=True)

        kopf.on.login(registry=registry, id="emulator")(login)
        self.thread = threading.Thread(
            target=self._run, args=(config, kubeapi.Kube.for_url(url), registry, clock), daemon=True)
        self.thread.start()
        if not self.ready_flag.wait(15):
            raise RuntimeError(f"operator did not start: {self.errors}")

    def _run(self, config: settings.OperatorConfig, kube: kubeapi.Kube,
             registry: kopf.OperatorRegistry, clock: opclock.Clock | None) -> None:
        try:
            # Leader election on, as in production: the first one takes the Lease at once.
            asyncio.run(main.run_async(config, kube, registry, stop_flag=self.stop_flag,
                                       ready_flag=self.ready_flag,
                                       lease=leader.LeaseConfig(namespace=config.namespace),
                                       metrics=self.metrics, clock=clock))
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.errors.append(exc)
            self.ready_flag.set()

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(20)
        assert not self.thread.is_alive(), "operator did not stop"


class Harness:
    def __init__(self, cluster: EmulatedCluster, tmp_path: pathlib.Path) -> None:
        self.cluster = cluster
        self.kube = kubeapi.Kube.for_url(cluster.url)
        self.config = settings.OperatorConfig(
            namespace=NS, resync_seconds=0.5, stuck_after_seconds=600.0,
            rules_path=tmp_path / "missing-rules.yaml")
        # Shared by the operators this harness starts: a restart keeps the time.
        self.clock = opclock.FakeClock()
        self.operator: RunningOperator | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> RunningOperator:
        self.operator = RunningOperator(self.cluster.url, self.config, self.clock)
        return self.operator

    def resync(self, passes: int = 1) -> None:
        """Move the clock on by the resync period ``passes`` times, each time
        until the operator's resync has run (instead of sleeping it out)."""
        for _ in range(passes):
            begun = self.clock.waits
            self.clock.advance(self.config.resync_seconds)
            wait_for(lambda begun=begun: self.clock.waits > begun, what="a resync pass")

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None

    # -- API helpers used by the tests, as kubectl would do --
    def apply_cr(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        path = f"{CR_PATH}/namespaces/{namespace}/kpodmetricsprofiles/{name}"
        if self.kube.get(path) is None:
            return self.kube.create({"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile",
                                     "metadata": {"name": name, "namespace": namespace}, "spec": spec})
        return self.kube.merge_patch(path, {"spec": spec})

    def cr(self, namespace: str, name: str) -> dict[str, Any]:
        found = self.kube.get(f"{CR_PATH}/namespaces/{namespace}/kpodmetricsprofiles/{name}")
        assert found is not None
        return found

    def condition(self, namespace: str, name: str, ctype: str) -> dict[str, Any] | None:
        for cond in (self.cr(namespace, name).get("status") or {}).get("conditions") or []:
            if cond["type"] == ctype:
                return cond
        return None

    def get(self, path: str) -> dict[str, Any] | None:
        return self.kube.get(path)

    def configmap(self) -> dict[str, Any] | None:
        return self.kube.get(f"/api/v1/namespaces/{AGENTS}/configmaps/kpod-agent-config")

    def daemonset(self) -> dict[str, Any] | None:
        return self.kube.get(f"/apis/apps/v1/namespaces/{AGENTS}/daemonsets/kpod-agent")
