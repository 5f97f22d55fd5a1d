"""Bad KpodMetricsProfiles: refused by the CRD schema, or reported by the
operator in a condition naming the field; never a change of the running fleet
config (ConfigMap agent.yaml and its generation).

The schema verdict is the admission of crds/: the structural schema checked
with jsonschema, with unknown fields as errors (kubectl's default strict field
validation), then its CEL rules evaluated with cel-python.
The operator verdict comes from kopf running against the emulated API server,
which does not validate: the bad CR gets in as it would through a client that
skips validation or a cluster with an older CRD.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kpod_agent import config as agentconfig
from tests.reliability.operator_support import (
    CR_PATH,
    NS,
    Harness,
    schema_errors,
    wait_for,
)

GOOD_FLEET = {"profile": "standard", "syscalls": ["read", "write"],
              "collectors": {"syscall": {"enabled": True, "interval": "30s"}}}

# A list that renders a node config over the agent's document limit
# (agentconfig.MAX_DOCUMENT_BYTES, 1 MiB) while the CR itself stays under the
# emulator's 1 MiB request limit: YAML spends 6 bytes per item, JSON 5.
HUGE_LIST = ["a"] * 180_000


# metav1.Condition's limit: a bad CR must not blow up its own status.
MAX_CONDITION_MESSAGE = 32768


@dataclasses.dataclass(frozen=True)
class BadCR:
    id: str
    spec: Any
    field: str  # must appear in the condition message
    schema_refuses: bool  # does the CRD schema (API server) refuse it?
    override: bool = False  # applied as a namespace override instead of the fleet


CASES = [
    BadCR("wrong-enum-profile", {"profile": "huge"}, "profile", True),
    BadCR("wrong-enum-pull-policy", {"agent": {"imagePullPolicy": "Sometimes"}}, "agent.imagePullPolicy", True),
    BadCR("wrong-enum-discovery", {"agent": {"discovery": {"mode": "none"}}}, "agent.discovery.mode", True),
    BadCR("bad-duration", {"collectors": {"cpu": {"interval": "15 parsecs"}}}, "collectors.cpu.interval", True),
    BadCR("bad-duration-servicemonitor", {"serviceMonitor": {"interval": "soon"}}, "serviceMonitor.interval", True),
    BadCR("negative-interval-string", {"collectors": {"cpu": {"interval": "-5s"}}}, "collectors.cpu.interval", True),
    BadCR("negative-interval-integer", {"collectors": {"cpu": {"interval": -5}}}, "collectors.cpu.interval", True),
    BadCR("zero-interval", {"collectors": {"cpu": {"interval": "0s"}}}, "collectors.cpu.interval", True),
    BadCR("unknown-collector", {"collectors": {"gpu": {"enabled": True}}}, "collectors.gpu", True),
    BadCR("wrong-type-list", {"syscalls": "read"}, "syscalls", True),
    BadCR("wrong-type-collector", {"collectors": {"cpu": "on"}}, "collectors.cpu", True),
    BadCR("unknown-syscall", {"syscalls": ["read", "no_such_call"]}, "syscalls", True),
    BadCR("latency-on-cpu", {"collectors": {"cpu": {"latency": True}}}, "collectors.cpu.latency", True),
    BadCR("negative-max-unavailable", {"agent": {"updateStrategy": {"maxUnavailable": -1}}},
          "agent.updateStrategy.maxUnavailable", False),
    BadCR("bad-quantity", {"agent": {"resources": {"requests": {"cpu": "lots"}}}}, "agent.resources.requests", True),
    BadCR("selector-in-without-values", {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}},
          "podSelector.matchExpressions", True),
    BadCR("huge-syscall-list", {"syscalls": ["read"] * 600}, "syscalls", True),
    BadCR("huge-namespace-list", {"namespaces": {"include": HUGE_LIST}}, "namespaces", False),
    # Overrides: the same field kinds, plus the fleet-only fields.
    BadCR("override-fleet-field-agent", {"agent": {"image": "evil:1"}}, "agent", False, override=True),
    BadCR("override-fleet-field-namespaces", {"namespaces": {"include": ["a"]}}, "namespaces", False, override=True),
    BadCR("override-fleet-field-labels", {"includeLabels": ["app"]}, "includeLabels", False, override=True),
    BadCR("override-unknown-syscall", {"syscalls": ["nope"]}, "syscalls", True, override=True),
    BadCR("override-wrong-enum", {"profile": "everything"}, "profile", True, override=True),
    BadCR("override-latency-on-memory", {"collectors": {"memory": {"latency": True}}},
          "collectors.memory.latency", True, override=True),
    BadCR("override-many-unknown-syscalls", {"syscalls": [f"nope_{i:05d}" for i in range(20_000)]},
          "syscalls", True, override=True),
    BadCR("override-spec-not-a-mapping", "oops", "spec", True, override=True),
    BadCR("override-huge-selector",
          {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": HUGE_LIST[:20_000]}]}},
          "podSelector", False, override=True),
]
FLEET_CASES = [c for c in CASES if not c.override]
OVERRIDE_CASES = [c for c in CASES if c.override]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_schema_verdict(case: BadCR) -> None:
    """Which bad CRs the API server refuses by itself (the others only the operator catches)."""
    errors = schema_errors(case.spec)
    assert bool(errors) == case.schema_refuses, errors


def test_without_strict_field_validation_an_unknown_collector_is_pruned_not_refused() -> None:
    # A client sending fieldValidation=Ignore/Warn gets the unknown key pruned by
    # the API server: the CR is stored without it. Only the operator could see it,
    # and it never does; the strict validation above is what refuses it.
    assert schema_errors({"collectors": {"gpu": {"enabled": True}}}, strict=False) == []


def _replace_spec(h: Harness, namespace: str, name: str, spec: Any) -> None:
    """Set the whole spec (kubectl replace): keys of the old spec that the new one lacks go."""
    path = f"{CR_PATH}/namespaces/{namespace}/kpodmetricsprofiles/{name}"
    current = h.kube.get(path)
    if current is None:
        h.kube.create({"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile",
                       "metadata": {"name": name, "namespace": namespace}, "spec": spec})
        return
    h.kube.json_patch(path, [{"op": "replace" if "spec" in current else "add", "path": "/spec", "value": spec}])


def _settled(h: Harness, namespace: str, name: str, reason: str) -> bool:
    """The CR's current generation has been handled and got ``reason``."""
    cr = h.cr(namespace, name)
    st = cr.get("status") or {}
    return st.get("observedGeneration") == cr["metadata"]["generation"] and \
        h.reason(name, "Reconciled", namespace) == reason


def test_bad_fleet_specs_are_reported_and_change_nothing(op_harness: Harness) -> None:
    h = op_harness
    h.start()
    h.fleet_ready(GOOD_FLEET)
    good = h.running_config()
    assert good[1] == 1
    for case in FLEET_CASES:
        _replace_spec(h, NS, "default", case.spec)
        # The huge cases move ~1 MB per request: slow on a loaded machine.
        wait_for(lambda: _settled(h, NS, "default", "False/InvalidSpec"), timeout=30, what=f"{case.id}: InvalidSpec")
        message = h.condition(NS, "default", "Reconciled")["message"]
        assert case.field in message, (case.id, message)
        assert len(message) <= MAX_CONDITION_MESSAGE, (case.id, len(message))
        assert h.reason("default", "Degraded") == "True/InvalidSpec", case.id
        assert h.running_config() == good, f"{case.id} changed the running config"
        _replace_spec(h, NS, "default", GOOD_FLEET)
        wait_for(lambda: _settled(h, NS, "default", "True/ServiceMonitorCRDNotInstalled"),
                 what=f"{case.id}: recovered")
        # Back to the same content: the same generation, no write at all.
        assert h.running_config() == good, f"{case.id}: recovery rewrote the config"
    ds = h.daemonset()
    assert ds is not None and ds["metadata"]["generation"] == 1  # no bad spec reached the pod template


def _fleet_with_valid_override(h: Harness) -> tuple[str, int, str]:
    """Start the operator with the good fleet and a valid team-a override;
    the running config once both are in it."""
    h.start()
    h.fleet_ready(GOOD_FLEET)
    _replace_spec(h, "team-a", "metrics", {"profile": "comprehensive", "syscalls": ["futex"]})
    wait_for(lambda: _settled(h, "team-a", "metrics", "True/Merged"), what="valid override merged")
    # The CR's status is written before the ConfigMap: wait for the config too.
    wait_for(lambda: "team-a" in h.node_config().namespaceOverrides, what="override in the node config")
    return h.running_config()


def test_bad_overrides_are_reported_and_change_nothing(op_harness: Harness) -> None:
    h = op_harness
    good = _fleet_with_valid_override(h)
    assert "team-a" in agentconfig.parse_config(good[0]).namespaceOverrides
    for i, case in enumerate(OVERRIDE_CASES):
        namespace = f"bad-{i}"
        _replace_spec(h, namespace, "metrics", case.spec)
        wait_for(lambda: _settled(h, namespace, "metrics", "False/InvalidSpec"), what=f"{case.id}: InvalidSpec")
        message = h.condition(namespace, "metrics", "Reconciled")["message"]
        assert case.field in message, (case.id, message)
        assert len(message) <= MAX_CONDITION_MESSAGE, (case.id, len(message))
        assert h.running_config() == good, f"{case.id} changed the running config"
        # The fleet itself is not blamed for one namespace's mistake.
        assert (h.reason("default", "Reconciled") or "").startswith("True/"), case.id


def test_a_valid_override_turned_bad_keeps_its_last_good_version(op_harness: Harness) -> None:
    """An edit that breaks an override must not drop that namespace back to the
    fleet's defaults: the agents keep running its last valid version."""
    h = op_harness
    good = _fleet_with_valid_override(h)
    for spec, field in (({"profile": "comprehensive", "syscalls": ["futex", "nope"]}, "syscalls"),
                        ({"profile": "comprehensive", "agent": {"image": "x:1"}}, "agent")):
        _replace_spec(h, "team-a", "metrics", spec)
        wait_for(lambda: _settled(h, "team-a", "metrics", "False/InvalidSpec"), what="InvalidSpec")
        assert field in h.condition("team-a", "metrics", "Reconciled")["message"]
        # Several resyncs later, still the last good config.
        resyncs = h.cluster.requests()
        wait_for(lambda: len(h.cluster.requests()) > len(resyncs) + 20, what="resyncs")
        assert h.running_config() == good
    # Fixed: merged again, with the new content.
    _replace_spec(h, "team-a", "metrics", {"profile": "minimal"})
    wait_for(lambda: _settled(h, "team-a", "metrics", "True/Merged"), what="merged again")
    wait_for(lambda: h.node_config().namespaceOverrides["team-a"].profile == "minimal", what="new override")
    assert h.running_config()[1] == good[1] + 1
    # Deleting the CR (not breaking it) is what removes the override.
    h.kube.request("DELETE", f"{CR_PATH}/namespaces/team-a/kpodmetricsprofiles/metrics")
    wait_for(lambda: "team-a" not in h.node_config().namespaceOverrides, what="override removed")


def test_a_bad_first_fleet_creates_nothing_until_fixed(op_harness: Harness) -> None:
    h = op_harness
    h.start()
    _replace_spec(h, NS, "default", {"profile": "standard", "collectors": {"cpu": {"interval": "-1s"}}})
    wait_for(lambda: _settled(h, NS, "default", "False/InvalidSpec"), what="InvalidSpec")
    assert "collectors.cpu.interval" in h.condition(NS, "default", "Reconciled")["message"]
    assert set(h.object_counts().values()) == {0}
    _replace_spec(h, NS, "default", GOOD_FLEET)
    wait_for(lambda: h.configmap() and h.running_config()[1] == 1, what="created once fixed")
    # The ConfigMap goes first; the other objects follow within the same reconcile.
    wait_for(lambda: set(h.object_counts().values()) == {1}, what="every object created once")


def test_garbage_in_kopf_annotations_does_not_stall_the_cr(op_harness: Harness) -> None:
    """kopf keeps its progress and last handled spec in annotations of the CR;
    a manifest copied with `kubectl get -o yaml` and edited, or a hand edit,
    can carry garbage there. The CR's changes must still be handled at once,
    not only by the next resync (set beyond the test's waits here)."""
    h = op_harness
    h.config.resync_seconds = 60.0
    h.start()
    h.fleet_ready(GOOD_FLEET)
    _replace_spec(h, "team-a", "metrics", {"profile": "minimal"})
    wait_for(lambda: _settled(h, "team-a", "metrics", "True/Merged"), what="override merged")
    garbage = {"metadata": {"annotations": {"kpod.io/last-handled-configuration": "{not json",
                                            "kpod.io/fleet": "[1,"}}}
    for namespace, name in ((NS, "default"), ("team-a", "metrics")):
        h.kube.merge_patch(f"{CR_PATH}/namespaces/{namespace}/kpodmetricsprofiles/{name}", garbage)
    _replace_spec(h, NS, "default", {**GOOD_FLEET, "profile": "minimal"})
    wait_for(lambda: h.node_config().profile == "minimal", what="fleet edit handled")
    _replace_spec(h, "team-a", "metrics", {"profile": "comprehensive"})
    wait_for(lambda: h.node_config().namespaceOverrides["team-a"].profile == "comprehensive",
             what="override edit handled")
    assert h.running_config()[1] == 4  # fleet, override, and one per edit: nothing twice
