"""What the operator writes: it owns the fields it renders, restores the
DaemonSet's security-relevant fields after a hand edit, leaves fields of other
field managers alone, and never writes an object over an API limit.

The emulated API server does server-side apply with managedFields per
manager and refuses writes over the API's limits (annotations 256 KiB,
ConfigMap data 1 MiB, objects 1.5 MiB), as kube-apiserver does.
"""
from __future__ import annotations

import json
from typing import Any

from tests.reliability.operator_support import (
    DS_PATH,
    NS,
    Harness,
    wait_for,
)
from tests.support import emulator as opemu

SPEC = {"profile": "standard", "syscalls": ["read", "write"]}
HAND = "kubectl-edit"  # the field manager of the hand edits


def _pod_spec(ds: dict[str, Any]) -> dict[str, Any]:
    return ds["spec"]["template"]["spec"]


def _hand_edit(h: Harness, ops: list[dict[str, Any]]) -> None:
    h.kube.request("PATCH", DS_PATH, body=ops, query={"fieldManager": HAND},
                   content_type="application/json-patch+json")


def test_hand_added_privileges_on_the_daemonset_are_removed(op_harness: Harness) -> None:
    h = op_harness
    h.start()
    h.fleet_ready(SPEC)
    before = _pod_spec(h.daemonset())
    agent = before["containers"][0]
    privileged = {**agent, "securityContext": {**agent["securityContext"], "privileged": True,
                                               "capabilities": {"add": ["ALL"]}},
                  "volumeMounts": [*agent["volumeMounts"], {"name": "host-root", "mountPath": "/host"}]}
    sidecar = {"name": "shell", "image": "busybox", "securityContext": {"privileged": True}}
    _hand_edit(h, [
        {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": True},
        {"op": "add", "path": "/spec/template/spec/hostIPC", "value": True},
        {"op": "add", "path": "/spec/template/spec/securityContext", "value": {"runAsUser": 0, "sysctls": []}},
        {"op": "add", "path": "/spec/template/spec/volumes/-",
         "value": {"name": "host-root", "hostPath": {"path": "/"}}},
        {"op": "replace", "path": "/spec/template/spec/containers", "value": [privileged, sidecar]},
        {"op": "replace", "path": "/spec/template/spec/serviceAccountName", "value": "default"},
        # Not security-relevant and not the operator's: must stay.
        {"op": "add", "path": "/metadata/annotations/team.example.com~1owner", "value": "platform"},
    ])
    edited = _pod_spec(h.daemonset())
    assert edited["hostNetwork"] is True and len(edited["containers"]) == 2  # the edit landed

    def restored() -> bool:
        spec = _pod_spec(h.daemonset())
        return all(k not in spec for k in ("hostNetwork", "hostIPC")) and spec == before
    wait_for(restored, timeout=10, what="security-relevant fields restored")
    ds = h.daemonset()
    assert ds["metadata"]["annotations"]["team.example.com/owner"] == "platform"
    managers = {e["manager"] for e in ds["metadata"]["managedFields"]}
    assert HAND in managers  # the annotation stays theirs


def test_fields_of_other_managers_are_left_alone_and_owned_fields_restored(op_harness: Harness) -> None:
    h = op_harness
    h.start()
    h.fleet_ready(SPEC)
    # Another manager adds a label and a field of its own;
    # a hand edit changes a field the operator renders (the image).
    _hand_edit(h, [
        {"op": "add", "path": "/metadata/labels/cost-center", "value": "42"},
        {"op": "add", "path": "/spec/revisionHistoryLimit", "value": 3},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "evil:latest"},
    ])
    wait_for(lambda: _pod_spec(h.daemonset())["containers"][0]["image"] == "kpod-agent:dev",
             what="image restored")
    ds = h.daemonset()
    assert ds["metadata"]["labels"]["cost-center"] == "42"
    assert ds["spec"]["revisionHistoryLimit"] == 3


def test_no_object_written_over_an_api_limit_with_30k_namespaces(op_harness: Harness) -> None:
    """30,000 namespace names: the node config is ~510 KB, under the agent's
    1 MiB; a last-applied copy of it in an annotation would be over the
    API server's 256 KiB annotation limit and refused (422)."""
    h = op_harness
    h.start()
    h.fleet_ready(SPEC)
    names = [f"namespace-{i:05d}" for i in range(30_000)]
    h.apply_cr(NS, "default", {"namespaces": {"include": names}})
    wait_for(lambda: h.running_config()[1] == 2, timeout=30, what="generation 2 written")
    wait_for(lambda: (h.reason("default", "Reconciled") or "").startswith("True/"), timeout=30,
             what="reconciled")
    assert h.node_config().namespaces.include == names
    cm = h.configmap()
    data_bytes = len(cm["data"]["agent.yaml"])
    assert data_bytes > opemu.MAX_ANNOTATIONS_BYTES  # a copy of it could not be an annotation
    for plural in ("configmaps", "daemonsets", "kpodmetricsprofiles"):
        for obj in h.cluster.objects(plural):
            anns = obj["metadata"].get("annotations") or {}
            size = sum(len(k) + len(v) for k, v in anns.items())
            assert size < 1024, (plural, obj["metadata"]["name"], size)
    # What the client-side apply stored: the whole object again, in an annotation.
    print(f"\nnode config {data_bytes} bytes; a last-applied copy would be "
          f"{len(json.dumps(cm['data'], separators=(',', ':')))} bytes of annotation; "
          f"ConfigMap annotations now {sum(len(k) + len(v) for k, v in cm['metadata']['annotations'].items())} "
          f"bytes")
