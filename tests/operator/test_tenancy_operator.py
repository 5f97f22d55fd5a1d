"""Tenant overrides against the emulated API server with the real operator (kopf):
each case's blast radius is its own CR. The emulator does not run admission,
so every CR here gets in as through a client that skips validation; what the
CRD would have said is checked beside it (tests/operator/schemas.py)."""
from __future__ import annotations

import time
from typing import Any

from kpod_agent import config as agentconfig
from kpod_agent import filters
from kpod_operator import crd
from tests.support.operator import NS, Harness
from tests.support.waiting import wait_for

from .schemas import admission_errors

ALL_SYSCALLS = sorted(agentconfig.KNOWN_SYSCALLS)
X86 = sorted(agentconfig.syscall_numbers("x86_64"))


def _config(h: Harness) -> agentconfig.AgentConfig:
    cm = h.configmap()
    assert cm is not None
    config = agentconfig.parse_config(cm["data"]["agent.yaml"])
    filters.syscall_policies(config)  # the rest of the agent's checks before it applies a config
    return config


def _reason(h: Harness, namespace: str, name: str) -> str | None:
    cond = h.condition(namespace, name, "Reconciled")
    return None if cond is None else f"{cond['status']}/{cond['reason']}"


def _settled(h: Harness, namespace: str, name: str) -> str | None:
    cr = h.cr(namespace, name)
    if (cr.get("status") or {}).get("observedGeneration") != cr["metadata"]["generation"]:
        return None
    return _reason(h, namespace, name)


def _fleet_ready(h: Harness, spec: dict[str, Any]) -> None:
    h.apply_cr(NS, "default", spec)
    wait_for(lambda: h.configmap() and (_reason(h, NS, "default") or "").startswith("True/"), what="fleet")


def _events(h: Harness, namespace: str, name: str) -> list[tuple[str, str]]:
    items = h.kube.list(f"/api/v1/namespaces/{namespace}/events")
    return [(e["reason"], e["message"]) for e in items
            if e["involvedObject"]["name"] == name and e.get("source", {}).get("component") == "kpod-operator"]


def _admitted(namespace: str, spec: dict[str, Any]) -> list[str]:
    return admission_errors(crd.build_crd(), {"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile",
                                              "metadata": {"name": "x", "namespace": namespace}, "spec": spec})


def test_an_override_with_a_sub_microsecond_interval_never_blocks_the_fleet(harness: Harness,
                                                                           operator: Any) -> None:
    bad = {"collectors": {"cpu": {"interval": "0.0000000001s"}}}
    assert any("must be between 100ms and 168h" in e for e in _admitted("team-b", bad))
    _fleet_ready(harness, {"profile": "standard"})
    harness.apply_cr("team-b", "metrics", bad)
    wait_for(lambda: _settled(harness, "team-b", "metrics") == "False/InvalidSpec", what="InvalidSpec")
    assert "collectors.cpu.interval" in harness.condition("team-b", "metrics", "Reconciled")["message"]
    assert _events(harness, "team-b", "metrics")[0][0] == "InvalidSpec"
    # Every later fleet edit still applies.
    for generation, profile in ((2, "minimal"), (3, "comprehensive")):
        harness.apply_cr(NS, "default", {"profile": profile})
        wait_for(lambda: _config(harness).generation == generation, what=f"fleet edit {generation}")
        assert _config(harness).profile == profile
        wait_for(lambda: _settled(harness, NS, "default") == "True/ServiceMonitorCRDNotInstalled",
                 what="fleet reconciled")
    assert "team-b" not in _config(harness).namespaceOverrides


def test_past_the_agents_allowlist_limit_the_newest_overrides_are_refused(harness: Harness,
                                                                        operator: Any) -> None:
    _fleet_ready(harness, {"profile": "standard", "syscalls": ["read", "write"]})
    count = agentconfig.MAX_SYSCALL_POLICIES + 1
    for i in range(count):  # names sort as they are created (timestamps tie within a second)
        harness.apply_cr(f"t-{i:03d}", "metrics", {"syscalls": [X86[i]]})
    names = [f"t-{i:03d}" for i in range(count)]
    wait_for(lambda: all(_settled(harness, ns, "metrics") for ns in names), timeout=60, what="every verdict")
    verdicts = {ns: _reason(harness, ns, "metrics") for ns in names}
    refused = [ns for ns, v in verdicts.items() if v != "True/Merged"]
    # The fleet's allowlist is one of the 64: 63 overrides get theirs.
    assert refused == ["t-063", "t-064"]
    assert {verdicts[ns] for ns in refused} == {"False/OverBudget"}
    assert "at most 64 distinct syscall allowlists" in harness.condition("t-064", "metrics", "Reconciled")["message"]
    wait_for(lambda: len(_config(harness).namespaceOverrides) == 63, what="63 overrides rendered")
    assert len(filters.syscall_policies(_config(harness)).allowlists) == 64
    assert _settled(harness, NS, "default") == "True/ServiceMonitorCRDNotInstalled"
    assert [r for r, _ in _events(harness, "t-064", "metrics")] == ["OverBudget"]
    # An older override going away frees a slot for the newest refused one... on
    # the next reconcile, in creation order.
    harness.kube.request("DELETE", "/apis/kpod.io/v1alpha1/namespaces/t-000/kpodmetricsprofiles/metrics")
    wait_for(lambda: _reason(harness, "t-063", "metrics") == "True/Merged", what="t-063 merged")
    assert _reason(harness, "t-064", "metrics") == "False/OverBudget"


def test_an_override_in_an_excluded_namespace_changes_nothing_on_the_nodes(harness: Harness,
                                                                          operator: Any) -> None:
    _fleet_ready(harness, {"profile": "minimal"})
    before = harness.configmap()["data"]["agent.yaml"]
    assert len(_config(harness).node_collectors()) == 3
    costly = {"profile": "comprehensive", "syscalls": ALL_SYSCALLS,
              "collectors": {"syscall": {"enabled": True, "latency": True, "interval": "100ms"}}}
    assert _admitted("kube-system", costly) == []  # admission cannot know the namespace filter
    harness.apply_cr("kube-system", "metrics", costly)
    wait_for(lambda: _settled(harness, "kube-system", "metrics") == "False/NamespaceExcluded", what="excluded")
    message = harness.condition("kube-system", "metrics", "Reconciled")["message"]
    assert "excludes kube-system: this override changes nothing on the nodes" in message
    # The same override where the fleet measures: the budget names each limit.
    harness.apply_cr("team-c", "metrics", costly)
    wait_for(lambda: _settled(harness, "team-c", "metrics") == "False/OverBudget", what="over budget")
    message = harness.condition("team-c", "metrics", "Reconciled")["message"]
    assert "syscalls: 385 listed, overridePolicy.maxSyscalls is 64" in message
    assert "collectors.syscall.latency: overridePolicy.allowLatency is false" in message
    assert "collectors.syscall.interval: 100ms is below overridePolicy.minInterval 5s" in message
    # And with 1us intervals it is not even a valid spec, excluded namespace or not.
    tiny = {**costly, "collectors": {"syscall": {"interval": "1us"}}}
    assert any("must be between 100ms and 168h" in e for e in _admitted("kube-public", tiny))
    for namespace in ("team-d", "kube-public"):
        harness.apply_cr(namespace, "metrics", tiny)
        wait_for(lambda: _settled(harness, namespace, "metrics") == "False/InvalidSpec", what="invalid")
        assert "collectors.syscall.interval" in harness.condition(namespace, "metrics", "Reconciled")["message"]
    time.sleep(1.5)  # several resyncs
    assert harness.configmap()["data"]["agent.yaml"] == before
    config = _config(harness)
    assert config.generation == 1 and len(config.node_collectors()) == 3 and not config.syscall_latency()
    assert [r for r, _ in _events(harness, "kube-system", "metrics")] == ["NamespaceExcluded"]


def test_refusals_are_posted_as_events_once_per_change(harness: Harness, operator: Any) -> None:
    _fleet_ready(harness, {"profile": "standard"})
    harness.apply_cr(NS, "second", {"profile": "minimal"})
    wait_for(lambda: _reason(harness, NS, "second") == "False/Conflict", what="conflict")
    harness.apply_cr(NS, "default", {"profile": "nonsense"})
    wait_for(lambda: _settled(harness, NS, "default") == "False/InvalidSpec", what="invalid fleet")
    harness.cluster.fail_writes("configmaps", 403)
    harness.apply_cr(NS, "default", {"profile": "minimal"})
    wait_for(lambda: _settled(harness, NS, "default") == "False/ApplyFailed", what="apply failed")
    time.sleep(1.5)  # retries and resyncs: the same failure is not posted again
    harness.cluster.fail_writes("configmaps", None)
    wait_for(lambda: _settled(harness, NS, "default") == "True/ServiceMonitorCRDNotInstalled", what="healed")
    assert [r for r, _ in _events(harness, NS, "second")] == ["Conflict"]
    fleet_events = [r for r, _ in _events(harness, NS, "default")]
    assert fleet_events == ["InvalidSpec", "ApplyFailed"], fleet_events
    assert "ConfigMap/kpod-agent-config: HTTP 403" in dict(_events(harness, NS, "default"))["ApplyFailed"]
