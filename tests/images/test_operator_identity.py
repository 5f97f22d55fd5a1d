"""The operator starts as its Deployment runs it: a non-root uid with no
passwd entry, no USER/LOGNAME/HOME, no capabilities, no new privileges. kopf
names itself with getpass.getuser(), which raises for such a uid; the
operator must name itself and reconcile a fleet CR all the same. Run here
with setpriv, against the emulated API server; the image test runs the same
in the operator image."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.images import manifests
from tests.support.emulator import EmulatedCluster
from tests.support.operator import Harness
from tests.support.running_agent import free_port

pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")


def test_operator_reconciles_under_a_uid_without_passwd_entry(tmp_path: Path) -> None:
    run = manifests.OperatorRun.from_deployment()
    assert run.uid != 0 and run.security.get("runAsNonRoot") is True
    assert manifests.no_passwd_entry(run.uid), f"uid {run.uid} has a passwd entry here: the test would prove nothing"
    cluster = EmulatedCluster()
    harness = Harness(cluster, tmp_path)
    config_dir = manifests.kubeconfig_dir(cluster.url)
    port = free_port()
    env = {**manifests.ENV_WITHOUT_IDENTITY, **run.env, "KUBECONFIG": str(config_dir / "kubeconfig"),
           "KPOD_RESYNC_SECONDS": "1", "KPOD_OPERATOR_LIVENESS": f"http://127.0.0.1:{port}/healthz",
           # /metrics on a free port: 8080 may be taken by another run on this machine.
           "KPOD_OPERATOR_LISTEN": f"127.0.0.1:{free_port()}"}
    exe = Path(sys.executable).parent / "kpod-operator"
    proc = subprocess.Popen(
        ["setpriv", f"--reuid={run.uid}", f"--regid={run.gid}", "--clear-groups",
         "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
         sys.executable, str(exe), *run.args],
        env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = ""
    try:
        harness.apply_cr(manifests.NAMESPACE, "default", {"profile": "minimal"})

        def alive() -> str | None:
            return None if proc.poll() is None else f"operator exited {proc.returncode}"

        manifests.wait_until(harness.configmap, "the ConfigMap written by the operator", 60, alive)
        manifests.wait_until(lambda: manifests.reconciled(harness), "Reconciled=True on the fleet CR", 30, alive)
        assert manifests.http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert f"Uid:\t{run.uid}\t" in status and "CapEff:\t0000000000000000" in status
    finally:
        out = manifests.stop_process(proc)
        harness.stop()
        cluster.close()
        shutil.rmtree(config_dir, ignore_errors=True)
    assert "Traceback" not in out, out[-3000:]
    assert proc.returncode == 0, out[-3000:]
