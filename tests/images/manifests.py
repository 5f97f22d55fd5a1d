"""What the shipped manifests say about how each image runs, read at test
time so the tests follow the manifests instead of a copy of them: the
operator's Deployment (deploy/operator/deployment.yaml) and the agent's
DaemonSet as the operator renders it (kpod_operator.render)."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import yaml

from kpod_operator import model, render
from tests.assets.tools import REPO
from tests.support.kubeconfig import write_kubeconfig
from tests.support.waiting import wait_for

NAMESPACE = "kpod-system"


def operator_deployment() -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "deploy/operator/deployment.yaml").read_text())
    return next(d for d in docs if d and d.get("kind") == "Deployment")


def agent_daemonset() -> dict[str, Any]:
    """The DaemonSet the operator renders for the sample fleet CR."""
    fleet = next(d for d in yaml.safe_load_all((REPO / "deploy/samples/fleet.yaml").read_text()) if d)
    return render.render_daemonset(NAMESPACE, model.parse_fleet(fleet["spec"]), None)


def security_context(pod_spec: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """Container securityContext over the pod's, as the kubelet merges them."""
    merged = {k: v for k, v in (pod_spec.get("securityContext") or {}).items()
              if k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile", "seLinuxOptions")}
    merged.update(container.get("securityContext") or {})
    return merged


@dataclasses.dataclass
class OperatorRun:
    """How the Deployment runs the operator: its uid and gid, args, env."""
    uid: int
    gid: int
    args: list[str]
    env: dict[str, str]
    security: dict[str, Any]
    tmp_mounts: list[str]

    @classmethod
    def from_deployment(cls) -> OperatorRun:
        deployment = operator_deployment()
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        security = security_context(pod, container)
        uid = security["runAsUser"]
        env = {}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
            elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                env[var["name"]] = deployment["metadata"]["namespace"]
            elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[var["name"]] = "kpod-operator-0"
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        tmp_mounts = [m["mountPath"] for m in container.get("volumeMounts") or []
                      if "emptyDir" in volumes[m["name"]]]
        return cls(uid=uid, gid=security.get("runAsGroup", uid), args=list(container.get("args") or []),
                   env=env, security=security, tmp_mounts=tmp_mounts)


def kubeconfig_dir(url: str) -> pathlib.Path:
    """A world-readable directory holding a kubeconfig for `url` (plain http),
    so an unprivileged uid can read it. The caller removes it."""
    # Under /tmp itself: $TMPDIR may be a root-only directory (the agent's
    # bpfload points it at one when tests load BPF in-process).
    directory = pathlib.Path(tempfile.mkdtemp(prefix="kpod-kubeconfig-", dir="/tmp"))
    directory.chmod(0o755)
    path = write_kubeconfig(directory / "kubeconfig", url)
    path.chmod(0o644)
    return directory


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def wait_until(check: Callable[[], Any], what: str, timeout: float, alive: Callable[[], str | None]) -> Any:
    """wait_for(check) while the thing under test lives: `alive` returns a
    reason when it died, which fails at once."""
    def live_check() -> Any:
        dead = alive()
        if dead:
            raise RuntimeError(f"{what}: {dead}")
        return check()
    return wait_for(live_check, what, timeout=timeout, interval=0.2)


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def reconciled(harness: Any, name: str = "default") -> bool:
    for cond in (harness.cr(NAMESPACE, name).get("status") or {}).get("conditions") or []:
        if cond["type"] == "Reconciled":
            return cond["status"] == "True"
    return False


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def bpf_prog_ids() -> set[int]:
    out = subprocess.run(["bpftool", "prog", "list", "--json"], capture_output=True, check=True).stdout
    return {prog["id"] for prog in json.loads(out)}


def no_passwd_entry(uid: int) -> bool:
    import pwd

    try:
        pwd.getpwuid(uid)
    except KeyError:
        return True
    return False


ENV_WITHOUT_IDENTITY = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
