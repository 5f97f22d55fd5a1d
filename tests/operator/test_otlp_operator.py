"""spec.otlp through kopf against the emulated API server: the node config's
otlp section in the ConfigMap (the headers file's path, never the Secret),
the Secret mounted read-only by the DaemonSet, endpoint changes without a
pod restart, and a namespace override that sets it refused by name."""
from __future__ import annotations

from typing import Any

import kubernetes_validate

from kpod_agent import config as agentconfig
from tests.support.operator import NS, Harness
from tests.support.waiting import wait_for

K8S_VERSION = "1.30.0"


def _otlp(h: Harness) -> agentconfig.OtlpConfig | None:
    cm = h.configmap()
    return agentconfig.parse_config(cm["data"]["agent.yaml"]).otlp if cm else None


def _reason(h: Harness, namespace: str, name: str) -> str | None:
    cond = h.condition(namespace, name, "Reconciled")
    return None if cond is None else f"{cond['status']}/{cond['reason']}"


def test_operator_renders_otlp_and_mounts_the_headers_secret(harness: Harness, operator: Any) -> None:
    h = harness
    h.apply_cr(NS, "default", {"otlp": {"enabled": True, "endpoint": "http://otel-a:4318",
                                        "headersSecretRef": {"name": "otlp-auth", "key": "token"}}})
    wait_for(lambda: (o := _otlp(h)) is not None and o.enabled and h.daemonset(), what="otlp rendered")
    assert _otlp(h) == agentconfig.OtlpConfig(enabled=True, endpoint="http://otel-a:4318",
                                              headersFile=agentconfig.OTLP_HEADERS_FILE)
    assert "otlp-auth" not in h.configmap()["data"]["agent.yaml"]
    daemonset = h.daemonset()
    kubernetes_validate.validate(daemonset, K8S_VERSION, strict=True)
    pod = daemonset["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "otlp-auth" and volume["secret"]["optional"] is False
    assert volume["secret"]["items"] == [{"key": "token", "path": "headers"}]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True and f"{mount['mountPath']}/headers" == agentconfig.OTLP_HEADERS_FILE

    template = daemonset["spec"]["template"]
    h.apply_cr(NS, "default", {"otlp": {"endpoint": "http://otel-b:4318", "interval": "30s"}})
    wait_for(lambda: (o := _otlp(h)) is not None and o.endpoint == "http://otel-b:4318", what="new endpoint")
    assert _otlp(h).interval == 30.0  # type: ignore[union-attr]
    assert h.daemonset()["spec"]["template"] == template  # a ConfigMap change: no pod restart

    h.apply_cr("team-a", "mine", {"otlp": {"enabled": True, "endpoint": "http://evil:4318"}})
    wait_for(lambda: _reason(h, "team-a", "mine") == "False/InvalidSpec", what="override refused")
    message = h.condition("team-a", "mine", "Reconciled")["message"]  # type: ignore[index]
    assert "otlp" in message and "fleet profile" in message
    assert _otlp(h).endpoint == "http://otel-b:4318"  # type: ignore[union-attr]
