"""The images as a cluster runs them, on this machine's own container
runtimes: built by scripts/images.sh (`make images`); the agent run by
containerd with exactly the securityContext, host namespaces and mounts of
the DaemonSet the operator renders, in its own network namespace against
fake pods; the operator run by Docker as its Deployment runs it, against the
emulated API server."""
from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.images import engine, manifests, runtimes
from tests.support.emulator import EmulatedCluster
from tests.support.env import IN_CI
from tests.support.kernel_node import KernelNode
from tests.support.operator import Harness
from tests.support.running_agent import free_port, prog_ids_of

pytestmark = pytest.mark.slow
# Ceilings of the image sizes (uncompressed, as `docker image inspect` says).
AGENT_MAX_BYTES = 400_000_000
OPERATOR_MAX_BYTES = 200_000_000
N = 7919  # a prime number of calls: nothing else makes exactly that many
_nets = itertools.count(1)


@pytest.fixture(scope="module")
def images() -> Iterator[None]:
    reason = engine.unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"image tests cannot run under CI: {reason}", pytrace=False)
        pytest.skip(reason)
    with engine.engine():
        engine.build_images()
        yield


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}")
    return result


def test_version_help_and_bpf_source_need_no_kernel(images: None) -> None:
    """No headers, no /sys/kernel, no API server: these still answer."""
    from kpod_agent.version import version

    out = docker("run", "--rm", "--network", "none", engine.AGENT_IMAGE, "kpod-agent", "--version")
    assert out.stdout.strip() == f"kpod-agent {version()}"
    out = docker("run", "--rm", "--network", "none", engine.OPERATOR_IMAGE, "--version")
    assert out.stdout.strip() == f"kpod-operator {version()}"
    assert "--configmap" in docker("run", "--rm", "--network", "none", engine.AGENT_IMAGE).stdout
    out = docker("run", "--rm", "--network", "none", engine.AGENT_IMAGE, "--print-bpf", "syscall")
    assert "TRACEPOINT_PROBE" in out.stdout or "tracepoint" in out.stdout.lower()


def test_images_carry_only_what_they_run(images: None) -> None:
    agent = engine.image_size(engine.AGENT_IMAGE)
    operator = engine.image_size(engine.OPERATOR_IMAGE)
    assert agent <= AGENT_MAX_BYTES, f"agent image {agent / 1e6:.0f} MB > {AGENT_MAX_BYTES / 1e6:.0f} MB"
    assert operator <= OPERATOR_MAX_BYTES, f"operator image {operator / 1e6:.0f} MB > {OPERATOR_MAX_BYTES / 1e6:.0f} MB"
    listing = docker("run", "--rm", "--entrypoint", "sh", engine.AGENT_IMAGE, "-c",
                     "ls /opt/kpod/bin; ls /var/lib/apt/lists /var/cache/apt/archives; "
                     "command -v gcc cc clang || true; python3 -c 'import kopf' 2>&1 || true").stdout
    assert "pip" not in listing.split() and ".deb" not in listing and "partial" in listing
    assert "No module named 'kopf'" in listing, "the operator's kopf rides along in the agent image"
    no_ca = docker("run", "--rm", "--entrypoint", "sh", engine.OPERATOR_IMAGE, "-c",
                   "ls /src /opt/kpod/bin/pip 2>&1; ls /etc/ssl/certs 2>&1 | head -3").stdout
    assert "No such file" in no_ca and "ca-certificates" not in no_ca


# -- the operator, as deploy/operator/deployment.yaml runs it ------------------------------------

def test_operator_image_reconciles_as_its_deployment_runs_it(images: None, tmp_path: pathlib.Path) -> None:
    run = manifests.OperatorRun.from_deployment()
    assert manifests.no_passwd_entry(run.uid)
    image_user = docker("image", "inspect", "-f", "{{ .Config.User }}", engine.OPERATOR_IMAGE).stdout.strip()
    assert image_user == f"{run.uid}:{run.gid}", "the image's USER and the Deployment's runAsUser differ"
    cluster = EmulatedCluster()  # 127.0.0.1: the container shares the host's network
    harness = Harness(cluster, tmp_path)
    config_dir = manifests.kubeconfig_dir(cluster.url)
    port = free_port()
    env = {**run.env, "KUBECONFIG": "/var/run/kpod-test/kubeconfig", "KPOD_RESYNC_SECONDS": "1",
           "KPOD_OPERATOR_LIVENESS": f"http://127.0.0.1:{port}/healthz"}
    name = f"kpod-operator-test-{os.getpid()}"
    flags = runtimes.docker_run_flags(run.security, run.tmp_mounts)
    docker("run", "-d", "--name", name, "--network", "host", *flags,
           "-v", f"{config_dir}:/var/run/kpod-test:ro",
           *itertools.chain.from_iterable(("-e", f"{k}={v}") for k, v in env.items()),
           engine.OPERATOR_IMAGE, *run.args)
    try:
        def alive() -> str | None:
            state = docker("inspect", "-f", "{{ .State.Running }} {{ .State.ExitCode }}", name).stdout.split()
            if state[0] == "true":
                return None
            return f"operator container exited {state[1]}: {docker('logs', name).stderr[-3000:]}"

        harness.apply_cr(manifests.NAMESPACE, "default", {"profile": "minimal"})
        manifests.wait_until(harness.configmap, "the ConfigMap written by the operator image", 60, alive)
        manifests.wait_until(lambda: manifests.reconciled(harness), "Reconciled=True", 30, alive)
        assert harness.daemonset() is not None
        assert manifests.http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        docker("stop", "-t", "20", name, timeout=60)
        assert docker("inspect", "-f", "{{ .State.ExitCode }}", name).stdout.strip() == "0"
        logs = docker("logs", name)
        assert "Traceback" not in logs.stdout + logs.stderr, logs.stderr[-3000:]
    finally:
        docker("rm", "-f", name, check=False)
        harness.stop()
        cluster.close()
        shutil.rmtree(config_dir, ignore_errors=True)


# -- the agent, as the rendered DaemonSet runs it ------------------------------------------------

class PodNetwork:
    """A network namespace with a veth to the host: what a pod without
    hostNetwork gets from its CNI plugin."""

    def __init__(self) -> None:
        n = (os.getpid() * 7 + next(_nets)) % 250 + 1
        self.name = f"kpodimg{os.getpid()}x{n}"
        self.path = f"/var/run/netns/{self.name}"
        self.host_if, self.pod_if = f"kpi{n}h{os.getpid() % 1000}", f"kpi{n}p{os.getpid() % 1000}"
        self.host_ip, self.pod_ip = f"10.213.{n}.1", f"10.213.{n}.2"

    def __enter__(self) -> PodNetwork:
        ip = ["ip"]
        steps = [
            [*ip, "netns", "add", self.name],
            [*ip, "link", "add", self.host_if, "type", "veth", "peer", "name", self.pod_if, "netns", self.name],
            [*ip, "addr", "add", f"{self.host_ip}/30", "dev", self.host_if],
            [*ip, "link", "set", self.host_if, "up"],
            [*ip, "-n", self.name, "addr", "add", f"{self.pod_ip}/30", "dev", self.pod_if],
            [*ip, "-n", self.name, "link", "set", self.pod_if, "up"],
            [*ip, "-n", self.name, "link", "set", "lo", "up"],
        ]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True)
            if result.returncode != 0:
                self.__exit__()
                raise AssertionError(f"{' '.join(step)}: {result.stderr}")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def agent_env(container: dict[str, Any], pod_name: str, host_ip: str) -> dict[str, str]:
    """The container's env with the downward API resolved for a pod on node-1,
    whose address seen from the pod is ``host_ip``."""
    fields = {"spec.nodeName": "node-1", "metadata.name": pod_name, "metadata.namespace": manifests.NAMESPACE,
              "status.hostIP": host_ip}
    env = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            if path not in fields:
                raise runtimes.Unmappable(f"env {var['name']}: fieldRef {path} is not mapped")
            env[var["name"]] = fields[path]
    return env


def scrape(url: str, name: str, **labels: str) -> float:
    status, text = manifests.http_get(url + "/metrics")
    assert status == 200
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def entrypoint(image: str) -> list[str]:
    """The image's ENTRYPOINT: a pod that sets only args keeps it, while
    `ctr run IMAGE ID CMD...` replaces it, so it is passed explicitly."""
    import json

    return json.loads(docker("image", "inspect", "-f", "{{ json .Config.Entrypoint }}", image).stdout)


@contextlib.contextmanager
def agent_container(ref: str, flags: list[str], env: dict[str, str], args: list[str],
                    log: pathlib.Path) -> Iterator[tuple[subprocess.Popen, str]]:
    cid = f"kpod-agent-test-{os.getpid()}"
    engine.ctr("containers", "delete", cid, capture_output=True)
    pid_file = log.with_suffix(".pid")
    with log.open("wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            ["ctr", "-a", engine.containerd_socket(), "-n", "kpod-test", "run", "--rm", "--pid-file", str(pid_file),
             *flags, *itertools.chain.from_iterable(("--env", f"{k}={v}") for k, v in env.items()),
             ref, cid, *entrypoint(engine.AGENT_IMAGE), *args],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc, cid
    finally:
        if proc.poll() is None:
            engine.ctr("tasks", "kill", "-s", "SIGKILL", cid, capture_output=True)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        engine.ctr("containers", "delete", cid, capture_output=True)


@pytest.mark.kernel
def test_agent_image_counts_as_the_rendered_daemonset_runs_it(images: None, tmp_path: pathlib.Path) -> None:
    daemonset = manifests.agent_daemonset()
    pod = daemonset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "command" not in container
    security = manifests.security_context(pod, container)
    ref = engine.import_into_containerd(engine.AGENT_IMAGE)
    empty_dirs = pathlib.Path(tempfile.mkdtemp(prefix="kpod-emptydir-"))
    node = KernelNode(tmp_path)
    a, b = node.add_pod("web-a", "team-a"), node.add_pod("web-b", "team-b")
    try:
        with PodNetwork() as net, EmulatedCluster(host=net.host_ip) as api:
            for fake in (a, b):
                api.apply(fake.doc)
            config = node.config(discovery={"mode": "informer"}, collectors={"syscall": {"enabled": True}},
                                 syscalls=["getppid"])
            api.apply({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "kpod-agent-config", "namespace": manifests.NAMESPACE},
                       "data": {"agent.yaml": yaml.safe_dump(config.model_dump(mode="json", exclude_none=True))}})
            # The service account's API access: a kubeconfig where the kubelet
            # would project the token (no other mount is added).
            kube_dir = manifests.kubeconfig_dir(api.url)
            try:
                flags = runtimes.ctr_run_flags(pod, container, security, empty_dirs, net.path)
            except runtimes.NotGrantable as exc:
                # A kubelet here could not start this pod either: the
                # manifest asks for more than a node grants, which is a defect.
                pytest.fail(f"rendered DaemonSet cannot run on this machine: {exc}")
            flags.append(f"--mount=type=bind,src={kube_dir},dst=/var/run/secrets/kpod-test,options=rbind:ro")
            env = {**agent_env(container, "kpod-agent-test", net.host_ip),
                   "KUBECONFIG": "/var/run/secrets/kpod-test/kubeconfig"}
            args = [runtimes.expand(arg, env) for arg in container["args"]]
            port = int(args[args.index("--listen") + 1].rsplit(":", 1)[1])
            url = f"http://{net.pod_ip}:{port}"
            log = tmp_path / "agent.log"
            with agent_container(ref, flags, env, args, log) as (proc, cid):
                def alive() -> str | None:
                    return None if proc.poll() is None else \
                        f"agent container exited {proc.returncode}:\n{log.read_text()[-3000:]}"

                started = time.monotonic()
                manifests.wait_until(lambda: manifests.http_get(url + "/readyz")[0] == 200,
                                     "/readyz of the agent container", 90, alive)
                ready_after = time.monotonic() - started
                task_pid = int((log.with_suffix(".pid")).read_text())
                status = pathlib.Path(f"/proc/{task_pid}/status").read_text()
                want = runtimes.cap_mask(runtimes.capabilities(security, runtimes.CTR_DEFAULT_CAPS))
                assert f"CapEff:\t{want:016x}" in status, status
                seccomp = "2" if (security.get("seccompProfile") or {}).get("type") == "RuntimeDefault" else "0"
                assert f"Seccomp:\t{seccomp}" in status
                programs = prog_ids_of(task_pid)
                assert programs, "the agent holds no BPF program"
                manifests.wait_until(lambda: scrape(url, "kpod_collector_attached", collector="syscall") == 1,
                                     "syscall collector attached", 30, alive)
                before = {p.name: scrape(url, "kpod_syscall_count_total", pod=p.name, syscall="getppid")
                          for p in (a, b)}
                a.workload("getppid", N)
                manifests.wait_until(
                    lambda: scrape(url, "kpod_syscall_count_total", pod="web-a", syscall="getppid")
                    - before["web-a"] >= N, "the count in web-a", 20, alive)
                time.sleep(1.5)  # one more interval: nothing late may arrive
                assert scrape(url, "kpod_syscall_count_total", pod="web-a", syscall="getppid") - before["web-a"] == N
                assert scrape(url, "kpod_syscall_count_total", pod="web-b", syscall="getppid") - before["web-b"] == 0
                engine.ctr("tasks", "kill", "-s", "SIGTERM", cid, check=True, capture_output=True)
                assert proc.wait(40) == 0, log.read_text()[-3000:]
            left = programs & manifests.bpf_prog_ids()
            assert not left, f"BPF programs left after SIGTERM: {sorted(left)}"
            text = log.read_text()
            assert "Traceback" not in text, text[-3000:]
            print(f"agent container ready after {ready_after:.1f} s with {' '.join(flags)}")
            shutil.rmtree(kube_dir, ignore_errors=True)
    finally:
        node.close()
        shutil.rmtree(empty_dirs, ignore_errors=True)
        # containerd's garbage collector frees the layers once no image names them.
        engine.ctr("images", "rm", ref, capture_output=True)
