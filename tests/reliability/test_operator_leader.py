"""Two `kpod-operator` processes against the emulated API server, leader
election on the Lease kpod-operator with the production timings (lease 8 s,
renew deadline 5 s, retry 1.5 s).

- The leader is killed (SIGKILL) in the middle of a reconcile (its DaemonSet
  write held by the API server): the standby takes the Lease within 15 s and
  finishes the job; every object exists once and was never stored with two
  different contents; the standby wrote nothing but Lease requests before.
- The leader is paused (SIGSTOP, as a frozen node would be) past its
  deadline: the standby takes over; resumed, the old leader writes nothing
  and exits with status 1 (to restart as a standby).
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any


from tests.reliability.operator_support import (  # noqa: F401  (fixtures)
    NS,
    FaultyCluster,
    Harness,
    Logged,
    op_cluster,
    op_harness,
    wait_for,
)
from tests.support.kubeconfig import write_kubeconfig

SPEC = {"profile": "standard", "syscalls": ["read", "write"]}
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/kpod-operator"
VOLATILE = ("resourceVersion", "managedFields", "generation", "creationTimestamp", "uid")
WORKLOAD = ("configmaps", "daemonsets", "services", "serviceaccounts", "roles", "rolebindings",
            "clusterroles", "clusterrolebindings")


class Operator:
    def __init__(self, h: Harness, tmp_path: pathlib.Path, name: str) -> None:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", h.cluster.url)
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KPOD_RESYNC_SECONDS": "1", "POD_NAME": name}
        self.name = name
        self.log = tmp_path / f"{name}.log"
        exe = pathlib.Path(sys.executable).parent / "kpod-operator"
        self.proc = subprocess.Popen([str(exe), "--namespace", NS, "--listen", "", "--log-format", "json"],
                                     env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _holder(h: Harness) -> str:
    lease = h.get(LEASE)
    return ((lease or {}).get("spec") or {}).get("holderIdentity") or ""


def _wait_polling(h: Harness, name: str) -> None:
    """Until the operator process ``name`` has read the Lease: it is up and standing by."""
    wait_for(lambda: any(r.plural == "leases" and f"({name}_" in r.user_agent for r in h.cluster.requests()),
             timeout=20, what=f"{name} polling the lease")


def _writes_of(h: Harness, name: str, since: float = 0.0) -> list[Logged]:
    """Writes of objects other than the Lease by the operator process ``name``."""
    return [r for r in h.cluster.requests() if f"({name}_" in r.user_agent and r.time >= since
            and r.method in ("POST", "PATCH", "PUT", "DELETE") and r.plural != "leases"]


def _content(obj: dict[str, Any]) -> str:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in VOLATILE}
    return json.dumps({**obj, "metadata": meta, "status": None}, sort_keys=True)


def _assert_written_once(h: Harness) -> None:
    assert set(h.object_counts().values()) == {1}, h.object_counts()
    for plural in WORKLOAD:
        for obj in h.cluster.objects(plural):
            meta = obj["metadata"]
            versions = h.cluster.history(plural, meta.get("namespace"), meta["name"])
            assert len({_content(v) for v in versions}) == 1, (plural, meta["name"], len(versions))


def test_killed_leader_mid_reconcile_standby_finishes(op_harness: Harness, tmp_path: pathlib.Path) -> None:
    h = op_harness
    a = Operator(h, tmp_path, "op-a")
    b = None
    try:
        wait_for(lambda: _holder(h).startswith("op-a_"), timeout=20, what="op-a leads")
        b = Operator(h, tmp_path, "op-b")
        _wait_polling(h, "op-b")
        assert _holder(h).startswith("op-a_") and b.proc.poll() is None
        # The API server holds op-a's DaemonSet write, then fails it: op-a is
        # mid-reconcile (ConfigMap written, DaemonSet not) when it is killed.
        held = h.cluster.inject("daemonsets", {"PATCH"}, 500, 1, delay=5.0)
        h.apply_cr(NS, "default", SPEC)
        wait_for(lambda: held.hits == 1, timeout=20, what="op-a writing the DaemonSet")
        assert h.configmap() is not None and h.daemonset() is None
        killed = time.monotonic()
        a.proc.kill()
        a.proc.wait()
        wait_for(lambda: _holder(h).startswith("op-b_"), timeout=20, what="op-b takes over")
        takeover = time.monotonic() - killed
        wait_for(lambda: h.daemonset() is not None and (h.cr(NS, "default").get("status") or {})
                 .get("configGeneration") == 1 and set(h.object_counts().values()) == {1},
                 timeout=20, what="op-b finished the reconcile")
        print(f"\ntakeover {takeover:.1f} s after the leader was killed")
        assert takeover < 15.0
        _assert_written_once(h)
        leases = [r for r in h.cluster.requests() if r.plural == "leases" and "(op-b_" in r.user_agent
                  and r.method == "PUT" and r.status == 200]
        took = min(r.time for r in leases)
        assert _writes_of(h, "op-b", since=0.0) and not [r for r in _writes_of(h, "op-b") if r.time < took]
        assert not _writes_of(h, "op-a", since=killed)
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_paused_leader_resumes_without_writing_and_exits(op_harness: Harness, tmp_path: pathlib.Path) -> None:
    h = op_harness
    a = Operator(h, tmp_path, "op-a")
    b = None
    try:
        wait_for(lambda: _holder(h).startswith("op-a_"), timeout=20, what="op-a leads")
        h.apply_cr(NS, "default", SPEC)
        wait_for(lambda: (h.cr(NS, "default").get("status") or {}).get("configGeneration") == 1,
                 timeout=20, what="op-a reconciled")
        b = Operator(h, tmp_path, "op-b")
        _wait_polling(h, "op-b")
        a.proc.send_signal(signal.SIGSTOP)
        paused = time.monotonic()
        # A change while op-a is frozen: op-a would apply it when it wakes up.
        h.apply_cr(NS, "default", {"syscalls": ["read", "write", "close"]})
        wait_for(lambda: _holder(h).startswith("op-b_"), timeout=20, what="op-b takes over")
        takeover = time.monotonic() - paused
        wait_for(lambda: h.running_config()[1] == 2, timeout=20, what="op-b applied the change")
        resumed = time.monotonic()
        a.proc.send_signal(signal.SIGCONT)
        assert a.proc.wait(20) == 1
        print(f"\ntakeover {takeover:.1f} s after the leader froze")
        assert takeover < 15.0
        assert not _writes_of(h, "op-a", since=paused), _writes_of(h, "op-a", since=paused)
        assert _holder(h).startswith("op-b_")
        time.sleep(2)
        assert h.running_config()[1] == 2 and resumed < time.monotonic()
        assert "lost the lease" in a.log.read_text()
    finally:
        a.stop()
        if b is not None:
            b.stop()
