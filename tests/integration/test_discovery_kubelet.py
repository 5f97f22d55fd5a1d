"""Discovery in kubelet mode against a real HTTP(S) fake kubelet and real directory trees."""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kpod_agent import cgroups, discovery
from kpod_agent.config import DiscoveryConfig
from kpod_agent.discovery import Discovery
from kpod_agent.pods import PodIndex
from tests.support.fake_kubelet import FakeKubelet, create_pod_cgroups, make_pod, remove_cgroup_tree

INTERVAL = "50ms"


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Recorder:
    """on_change sink: every published index, in order."""

    def __init__(self) -> None:
        self.calls: list[PodIndex] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, index: PodIndex) -> None:
        with self._lock:
            self.calls.append(index)
            self.threads.add(threading.current_thread().name)


@pytest.fixture()
def layout(tmp_path: Path) -> cgroups.CgroupLayout:
    (tmp_path / "unified").mkdir()
    return cgroups.CgroupLayout(unified=tmp_path / "unified")


@pytest.fixture()
def kubelet() -> Iterator[FakeKubelet]:
    with FakeKubelet() as server:
        yield server


@pytest.fixture()
def make_discovery(layout: cgroups.CgroupLayout) -> Iterator[Callable[..., Discovery]]:
    started: list[Discovery] = []

    def make(url: str, on_change: Callable[[PodIndex], None] | None = None,
             service_account_dir: Path = discovery.SERVICE_ACCOUNT_DIR, host_ip: str | None = None,
             **config: object) -> Discovery:
        cfg = DiscoveryConfig(mode="kubelet", kubeletURL=url, interval=INTERVAL, **config)
        disc = Discovery(cfg, "node-1", cgroups.CgroupResolver(layout), on_change=on_change, max_backoff=0.2,
                         service_account_dir=service_account_dir, host_ip=host_ip)
        started.append(disc)
        return disc

    yield make
    for disc in started:
        disc.stop()


def _names(index: PodIndex) -> dict[str, set[str]]:
    """pod name -> containers that resolved ("" = the pod cgroup)."""
    out: dict[str, set[str]] = {}
    for entry in index.entries.values():
        out.setdefault(entry.pod, set()).add(entry.container)
    return out


def test_pods_appear_change_and_disappear(kubelet: FakeKubelet, layout: cgroups.CgroupLayout,
                                          make_discovery: Callable[..., Discovery]) -> None:
    web = make_pod("web", labels={"app": "web"}, containers={"nginx": "containerd://" + "a1" * 32})
    db = make_pod("db", qos="guaranteed", containers={"pg": "containerd://" + "b2" * 32})
    web_paths = create_pod_cgroups(layout.unified, web, "burstable")
    kubelet.set_pods([web])
    rec = Recorder()
    disc = make_discovery(kubelet.url, on_change=rec)
    assert not disc.synced
    disc.start()

    wait_for(lambda: _names(disc.index) == {"web": {"", "nginx"}}, what="web pod")
    assert disc.synced and disc.errors_total == 0
    nginx_id = os.stat(layout.unified / web_paths["nginx"]).st_ino
    assert disc.index.lookup(nginx_id).container == "nginx"  # type: ignore[union-attr]
    assert rec.threads == {"kpod-discovery"}

    # The db pod is listed before its cgroup exists: kept, unresolved, retried.
    kubelet.set_pods([web, db])
    wait_for(lambda: db["metadata"]["uid"] in disc.index.unresolved, what="db listed")
    assert _names(disc.index) == {"web": {"", "nginx"}}
    create_pod_cgroups(layout.unified, db, "guaranteed")
    wait_for(lambda: _names(disc.index).get("db") == {"", "pg"}, what="db resolved")
    assert disc.index.unresolved == ()

    # A label change is a content change.
    web["metadata"]["labels"]["app"] = "web-v2"
    kubelet.set_pods([web, db])
    wait_for(lambda: disc.index.pods[web["metadata"]["uid"]].labels == {"app": "web-v2"}, what="relabel")

    # Deleted pod: gone from the index.
    kubelet.set_pods([db])
    remove_cgroup_tree(layout.unified / web_paths[""])
    wait_for(lambda: set(_names(disc.index)) == {"db"}, what="web gone")
    assert disc.index.lookup(nginx_id) is None


def test_on_change_only_when_content_changes(kubelet: FakeKubelet, layout: cgroups.CgroupLayout,
                                             make_discovery: Callable[..., Discovery]) -> None:
    pod = make_pod("steady")
    create_pod_cgroups(layout.unified, pod, "burstable")
    kubelet.set_pods([pod])
    rec = Recorder()
    disc = make_discovery(kubelet.url, on_change=rec)
    disc.start()
    wait_for(lambda: len(rec.calls) == 1)
    polls = kubelet.requests
    wait_for(lambda: kubelet.requests >= polls + 5, what="five more polls")
    assert len(rec.calls) == 1
    kubelet.set_pods([])
    wait_for(lambda: len(rec.calls) == 2)
    assert rec.calls[-1].entries == {}


@pytest.mark.parametrize("failure", ["http500", "garbage", "not-a-podlist", "slow", "down"])
def test_failures_keep_the_last_index_and_recover(
    failure: str, kubelet: FakeKubelet, layout: cgroups.CgroupLayout,
    make_discovery: Callable[..., Discovery], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(discovery, "KUBELET_TIMEOUT", (0.5, 0.3))
    pod = make_pod("survivor")
    create_pod_cgroups(layout.unified, pod, "besteffort")
    kubelet.set_pods([pod])
    url = kubelet.url
    disc = make_discovery(url)
    disc.refresh()
    good = disc.index
    assert _names(good) == {"survivor": {"", "app"}}

    if failure == "http500":
        kubelet.fail_with(500)
    elif failure == "garbage":
        kubelet.garbage()
    elif failure == "not-a-podlist":
        kubelet.garbage(b'{"kind": "Status", "code": 403}')
    elif failure == "slow":
        kubelet.slow(1.0)
    else:
        kubelet.close()  # connection refused

    caplog.set_level(logging.INFO, logger="kpod_agent.discovery")
    disc.start()
    wait_for(lambda: disc.errors_total >= 3, what="three failed polls")
    assert disc.index is good
    assert disc.last_error
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once per change of error, not per poll
    if failure == "http500":
        assert "HTTP 500" in disc.last_error

    if failure == "down":
        return  # this server cannot come back on the same port; recovery is covered by the others
    kubelet.healthy()
    newcomer = make_pod("newcomer")
    create_pod_cgroups(layout.unified, newcomer, "burstable")
    kubelet.set_pods([pod, newcomer])
    wait_for(lambda: "newcomer" in _names(disc.index), what="recovery")
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert time.monotonic() - disc.last_success < 5


def test_stop_returns_promptly_while_a_request_hangs(kubelet: FakeKubelet,
                                                       make_discovery: Callable[..., Discovery]) -> None:
    kubelet.slow(3.0)
    disc = make_discovery(kubelet.url)
    disc.start()
    wait_for(lambda: kubelet.requests >= 1)
    started = time.monotonic()
    disc.stop()
    assert time.monotonic() - started < 1.5


def _service_account(directory: Path, token: str, ca: Path | None) -> Path:
    """A service-account directory as Kubernetes mounts it: token and ca.crt."""
    directory.mkdir(exist_ok=True)
    (directory / "token").write_text(token + "\n")
    if ca is not None:
        (directory / "ca.crt").write_bytes(ca.read_bytes())
    return directory


def test_plain_http_sends_no_token(kubelet: FakeKubelet, tmp_path: Path,
                                   make_discovery: Callable[..., Discovery]) -> None:
    sa = _service_account(tmp_path / "sa", "secret", None)
    disc = make_discovery(kubelet.url, service_account_dir=sa)
    disc.refresh()
    assert disc.synced
    assert "Authorization" not in kubelet.last_headers


def test_https_with_rotating_token(tmp_path: Path, layout: cgroups.CgroupLayout,
                                   make_discovery: Callable[..., Discovery]) -> None:
    pod = make_pod("secure")
    create_pod_cgroups(layout.unified, pod, "burstable")
    with FakeKubelet(https=True, token="first-token") as kubelet:
        sa = _service_account(tmp_path / "sa", "first-token", kubelet.ca_path)
        kubelet.set_pods([pod])
        disc = make_discovery(kubelet.url, service_account_dir=sa)  # verified against ca.crt
        disc.refresh()
        assert _names(disc.index) == {"secure": {"", "app"}}
        assert kubelet.last_headers["Authorization"] == "Bearer first-token"

        # The kubelet now wants the rotated token; the agent has the old one until the file changes.
        kubelet.required_token = "second-token"
        disc.refresh()
        assert disc.errors_total == 1 and "401" in (disc.last_error or "")
        (sa / "token").write_text("second-token\n")
        kubelet.set_pods([])
        disc.refresh()
        assert disc.errors_total == 1 and disc.index.entries == {}


def test_https_is_verified_against_the_cluster_ca_by_default(
        tmp_path: Path, make_discovery: Callable[..., Discovery]) -> None:
    with FakeKubelet(https=True, token="t") as kubelet, FakeKubelet(https=True) as other:
        assert kubelet.ca_path is not None and other.ca_path is not None
        trusted = make_discovery(kubelet.url, service_account_dir=_service_account(tmp_path / "a", "t",
                                                                                   kubelet.ca_path))
        trusted.refresh()
        assert trusted.synced and trusted.errors_total == 0

        # No setting: a kubelet whose certificate the cluster CA did not sign is refused.
        wrong_ca = make_discovery(kubelet.url, service_account_dir=_service_account(tmp_path / "b", "t",
                                                                                    other.ca_path))
        wrong_ca.refresh()
        assert not wrong_ca.synced and kubelet.requests == 1
        assert "cannot verify the kubelet's serving certificate" in (wrong_ca.last_error or "")
        assert "kubeletInsecureTLS" in (wrong_ca.last_error or "")

        # The documented opt-out reaches it, token included (the node's own address).
        insecure = make_discovery(kubelet.url, kubeletInsecureTLS=True,
                                  service_account_dir=_service_account(tmp_path / "c", "t", other.ca_path))
        insecure.refresh()
        assert insecure.synced and kubelet.last_headers["Authorization"] == "Bearer t"


def test_unverified_tls_sends_no_token_to_another_host(
        tmp_path: Path, make_discovery: Callable[..., Discovery]) -> None:
    sa = _service_account(tmp_path / "sa", "t", None)
    disc = make_discovery("https://kubelet.example.invalid:10250/pods", kubeletInsecureTLS=True,
                          service_account_dir=sa, host_ip="10.0.0.7")
    disc.refresh()
    assert not disc.synced
    assert "is not this node's address (10.0.0.7): the token is not sent" in (disc.last_error or "")


def test_default_url_is_the_node_address_from_the_downward_api(
        tmp_path: Path, layout: cgroups.CgroupLayout, make_discovery: Callable[..., Discovery]) -> None:
    """No kubeletURL: https://$HOST_IP:10250/pods, the kubelet of the node the pod runs on
    (a loopback address other than 127.0.0.1 stands for the node's IP)."""
    assert discovery.kubelet_url(DiscoveryConfig(mode="kubelet"), "10.0.0.7") == "https://10.0.0.7:10250/pods"
    assert discovery.kubelet_url(DiscoveryConfig(mode="kubelet"), "fd00::7") == "https://[fd00::7]:10250/pods"
    host_ip = f"127.{os.getpid() % 200 + 20}.{os.getpid() // 200 % 250 + 1}.9"
    pod = make_pod("on-this-node")
    create_pod_cgroups(layout.unified, pod, "burstable")
    with FakeKubelet(https=True, token="t", host=host_ip, port=discovery.KUBELET_PORT) as kubelet:
        kubelet.set_pods([pod])
        sa = _service_account(tmp_path / "sa", "t", kubelet.ca_path)
        disc = make_discovery("", service_account_dir=sa, host_ip=host_ip)
        disc.refresh()
        assert disc.last_error is None and _names(disc.index) == {"on-this-node": {"", "app"}}


