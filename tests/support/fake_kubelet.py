"""A fake kubelet: a real HTTP(S) server that answers ``GET /pods`` with a PodList.

Usage::

    from tests.support.fake_kubelet import FakeKubelet, make_pod

    with FakeKubelet() as kubelet:               # http://127.0.0.1:<port>/pods
        kubelet.set_pods([make_pod("web-1", uid="...", containers={"app": "containerd://abc"})])
        kubelet.fail_with(500)                     # next requests answer 500
        kubelet.slow(3.0)                          # ... or sleep 3 s before answering
        kubelet.garbage(b"{not json")              # ... or answer this body with 200
        kubelet.healthy()                          # back to normal
        kubelet.requests                           # how many /pods requests were served

    with FakeKubelet(https=True, token="s3cret") as kubelet:   # self-signed cert, bearer token required
        kubelet.url, kubelet.ca_path               # the cert doubles as CA for verification

It runs ``http.server`` in a daemon thread on 127.0.0.1:0, so every test gets
its own port. ``make_pod`` builds real-looking Pod JSON (as kubelet and the
API server return it) for both this server and the emulated API server.
"""
from __future__ import annotations

import copy
import http.server
import json
import os
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

QOS_NAMES = {"guaranteed": "Guaranteed", "burstable": "Burstable", "besteffort": "BestEffort"}


def make_pod(
    name: str,
    namespace: str = "default",
    uid: str | None = None,
    *,
    node: str = "node-1",
    containers: dict[str, str | None] | None = None,
    init_containers: dict[str, str | None] | None = None,
    labels: dict[str, str] | None = None,
    qos: str | None = "burstable",
    phase: str = "Running",
    restarts: int | dict[str, int] = 0,
    resource_version: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Pod document shaped like the kubelet's /pods items.

    `containers` maps container name -> containerID (``containerd://<id>``)
    or None for a container that has not started (no containerID). `qos` is a
    lowercase QoS class or None to omit status.qosClass. `restarts` is one
    count for all containers or a per-name dict.
    """
    uid = uid or str(uuid.uuid4())
    containers = {"app": f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}"} if containers is None else containers

    def statuses(spec: dict[str, str | None]) -> list[dict[str, Any]]:
        out = []
        for cname, cid in spec.items():
            count = restarts.get(cname, 0) if isinstance(restarts, dict) else restarts
            status: dict[str, Any] = {
                "name": cname, "image": "registry.k8s.io/pause:3.9", "imageID": "",
                "ready": cid is not None, "started": cid is not None, "restartCount": count,
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}} if cid
                else {"waiting": {"reason": "ContainerCreating"}},
            }
            if cid is not None:
                status["containerID"] = cid
            out.append(status)
        return out

    metadata: dict[str, Any] = {
        "name": name, "namespace": namespace, "uid": uid,
        "labels": dict(labels or {}), "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    status: dict[str, Any] = {"phase": phase, "hostIP": "10.0.0.1", "podIP": "10.244.0.5"}
    if qos is not None:
        status["qosClass"] = QOS_NAMES[qos]
    if phase != "Pending" or any(containers.values()):
        status["containerStatuses"] = statuses(containers)
    if init_containers:
        status["initContainerStatuses"] = statuses(init_containers)
    return {
        "kind": "Pod", "apiVersion": "v1", "metadata": metadata,
        "spec": {
            "nodeName": node,
            "containers": [{"name": c, "image": "registry.k8s.io/pause:3.9"} for c in containers],
            "initContainers": [{"name": c, "image": "busybox"} for c in (init_containers or {})],
        },
        "status": status,
    }


RUNTIME_SCOPE_PREFIXES = {"containerd": "cri-containerd-", "cri-o": "crio-", "docker": "docker-"}


def pod_cgroup_relpath(uid: str, qos: str, driver: str = "systemd", root: str | None = None) -> str:
    """Where kubelet puts a pod's cgroup, relative to the cgroup2 mount.

    `root` is kubelet's top cgroup (default ``kubepods.slice`` for systemd,
    ``kubepods`` for cgroupfs); a systemd root must end in ``.slice``."""
    if driver == "systemd":
        root = root or "kubepods.slice"
        stem = root.rsplit("/", 1)[-1].removesuffix(".slice")
        u = uid.replace("-", "_")
        if qos == "guaranteed":
            return f"{root}/{stem}-pod{u}.slice"
        return f"{root}/{stem}-{qos}.slice/{stem}-{qos}-pod{u}.slice"
    if driver == "cgroupfs":
        root = root or "kubepods"
        return f"{root}/pod{uid}" if qos == "guaranteed" else f"{root}/{qos}/pod{uid}"
    raise ValueError(f"unknown cgroup driver {driver!r}")


def container_cgroup_name(container_id: str, driver: str = "systemd") -> str:
    """Directory name of a container (``containerd://<id>`` form) under its pod's cgroup."""
    runtime, _, ident = container_id.partition("://")
    if driver == "systemd":
        return f"{RUNTIME_SCOPE_PREFIXES[runtime]}{ident}.scope"
    # cgroupfs driver: containerd and docker use the bare id, CRI-O keeps its prefix.
    return f"crio-{ident}" if runtime == "cri-o" else ident


def create_pod_cgroups(
    unified: Path,
    pod: dict[str, Any],
    qos: str,
    driver: str = "systemd",
    root: str | None = None,
    v1: Mapping[str, Path] | None = None,
) -> dict[str, str]:
    """mkdir a pod's cgroups as kubelet and the runtime would: the pod directory
    and one per started container, in the cgroup2 tree and (hybrid hosts) the
    same relative path in every v1 hierarchy of `v1`.

    Works on a temporary tree (directory inodes stand in for cgroup ids) and on
    the real cgroupfs. Returns container name -> relpath, "" -> the pod's."""
    pod_rel = pod_cgroup_relpath(pod["metadata"]["uid"], qos, driver, root)
    out = {"": pod_rel}
    status = pod.get("status", {})
    for key in ("initContainerStatuses", "containerStatuses"):
        for st in status.get(key, []):
            if st.get("containerID"):
                out[st["name"]] = f"{pod_rel}/{container_cgroup_name(st['containerID'], driver)}"
    for base in [unified, *(v1 or {}).values()]:
        for rel in out.values():
            (base / rel).mkdir(parents=True, exist_ok=True)
    return out


def remove_cgroup_tree(path: Path) -> None:
    """rmdir `path` and every directory below it, deepest first.

    Cgroup directories can only be removed with rmdir once they have no
    children and no tasks; their files are virtual and go with them."""
    if not path.exists():
        return
    for dirpath, _dirnames, _files in os.walk(path, topdown=False):
        os.rmdir(dirpath)


def self_signed_cert(directory: Path, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """(cert, key) for CN/SAN ``ip``, made with the openssl CLI (EC key: fast)."""
    cert, key = directory / "kubelet.crt", directory / "kubelet.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", f"/CN={ip}", "-addext", f"subjectAltName=IP:{ip}"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


class FakeKubelet:
    """The kubelet's ``/pods`` endpoint over real HTTP; state changes apply to the next request."""

    def __init__(self, *, https: bool = False, token: str | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._pods: list[dict[str, Any]] = []
        self._status = 200
        self._delay = 0.0
        self._body: bytes | None = None
        self.required_token = token
        self.requests = 0
        self.last_headers: dict[str, str] = {}
        self._https = https
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca_path: Path | None = None
        self.host = host
        self._server = http.server.ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        if https:
            self._tmp = tempfile.TemporaryDirectory(prefix="fake-kubelet-")
            cert, key = self_signed_cert(Path(self._tmp.name), host)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.ca_path = cert
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> FakeKubelet:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-kubelet", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> FakeKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        scheme = "https" if self._https else "http"
        return f"{scheme}://{self.host}:{self._server.server_address[1]}/pods"

    # -- what the next requests get ----------------------------------------------

    def set_pods(self, pods: list[dict[str, Any]]) -> None:
        with self._lock:
            self._pods = copy.deepcopy(pods)

    def add_pod(self, pod: dict[str, Any]) -> None:
        with self._lock:
            self._pods.append(copy.deepcopy(pod))

    def remove_pod(self, uid: str) -> None:
        with self._lock:
            self._pods = [p for p in self._pods if p["metadata"]["uid"] != uid]

    def fail_with(self, status: int = 500) -> None:
        with self._lock:
            self._status = status

    def slow(self, seconds: float) -> None:
        with self._lock:
            self._delay = seconds

    def garbage(self, body: bytes = b'{"kind": "PodList", "items": [ {broken') -> None:
        with self._lock:
            self._body = body

    def healthy(self) -> None:
        with self._lock:
            self._status, self._delay, self._body = 200, 0.0, None

    # -- serving -----------------------------------------------------------------

    def _respond(self, path: str, headers: dict[str, str]) -> tuple[int, bytes, float]:
        with self._lock:
            self.requests += 1
            self.last_headers = headers
            delay = self._delay
            if path.split("?", 1)[0] != "/pods":
                return 404, b'{"kind":"Status","code":404}', delay
            if self.required_token is not None and headers.get("Authorization") != f"Bearer {self.required_token}":
                return 401, b"Unauthorized", delay
            if self._status != 200:
                return self._status, b"Internal Server Error", delay
            if self._body is not None:
                return 200, self._body, delay
            doc = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": self._pods}
            return 200, json.dumps(doc).encode(), delay

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        kubelet = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                status, body, delay = kubelet._respond(self.path, dict(self.headers.items()))
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): normal in slow-kubelet tests

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler
