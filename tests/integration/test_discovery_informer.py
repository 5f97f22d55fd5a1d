"""Discovery in informer mode: the kubernetes client's list + watch against the kmock emulator."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import kmock
import pytest

from kpod_agent import cgroups
from kpod_agent.config import DiscoveryConfig
from kpod_agent.discovery import Discovery
from kpod_agent.pods import PodIndex
from tests.integration.test_discovery_kubelet import Recorder, _names
from tests.support.emulator import EmulatedCluster
from tests.support.fake_kubelet import create_pod_cgroups, make_pod, remove_cgroup_tree
from tests.support.waiting import wait_for

NODE = "node-1"


@pytest.fixture()
def api() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as server:
        yield server


@pytest.fixture()
def layout(tmp_path: Path) -> cgroups.CgroupLayout:
    (tmp_path / "unified").mkdir()
    return cgroups.CgroupLayout(unified=tmp_path / "unified")


@pytest.fixture()
def make_discovery(api: EmulatedCluster, layout: cgroups.CgroupLayout) -> Iterator[Callable[..., Discovery]]:
    made: list[Discovery] = []

    def make(on_change: Callable[[PodIndex], None] | None = None, **kwargs: object) -> Discovery:
        cfg = DiscoveryConfig(mode="informer", interval="100ms")
        disc = Discovery(cfg, NODE, cgroups.CgroupResolver(layout), on_change=on_change,
                         api_client=api.api_client(), max_backoff=0.3, **kwargs)  # type: ignore[arg-type]
        made.append(disc)
        return disc

    yield make
    for disc in made:
        disc.stop()


def _lists(api: EmulatedCluster, plural: str = "pods") -> list[kmock.Request]:
    return [r for r in api.served() if r.action == kmock.action.LIST and r.resource is not None
            and r.resource.plural == plural]


def _watches(api: EmulatedCluster, plural: str = "pods") -> list[kmock.Request]:
    return [r for r in api.served() if r.action == kmock.action.WATCH and r.resource.plural == plural]


def test_pods_added_and_deleted(api: EmulatedCluster, layout: cgroups.CgroupLayout,
                                make_discovery: Callable[..., Discovery]) -> None:
    mine = make_pod("mine", node=NODE)
    theirs = make_pod("theirs", node="node-2")
    create_pod_cgroups(layout.unified, mine, "burstable")
    create_pod_cgroups(layout.unified, theirs, "burstable")  # same tree, other node: must stay out
    api.apply(mine)
    api.apply(theirs)
    rec = Recorder()
    disc = make_discovery(on_change=rec)
    disc.start()
    wait_for(lambda: _names(disc.index) == {"mine": {"", "app"}}, what="mine")
    assert disc.synced

    late = make_pod("late", node=NODE, qos="besteffort")
    create_pod_cgroups(layout.unified, late, "besteffort")
    api.apply(late)
    wait_for(lambda: "late" in _names(disc.index), what="late pod via watch")

    api.delete("pods", "default", "mine")
    wait_for(lambda: set(_names(disc.index)) == {"late"}, what="mine deleted")
    assert "theirs" not in _names(disc.index)
    assert rec.threads == {"kpod-discovery"}

    # One list, then watches from the listed version with the node's field selector.
    assert len(_lists(api)) == 1
    watch = _watches(api)[0]
    assert watch.params["fieldSelector"] == f"spec.nodeName={NODE}"
    assert watch.params["resourceVersion"] == "2"
    assert all(r.params.get("fieldSelector") == f"spec.nodeName={NODE}" for r in _lists(api))


def test_label_change_and_finished_pod(api: EmulatedCluster, layout: cgroups.CgroupLayout,
                                       make_discovery: Callable[..., Discovery]) -> None:
    pod = make_pod("job", node=NODE, labels={"v": "1"})
    create_pod_cgroups(layout.unified, pod, "burstable")
    api.apply(pod)
    disc = make_discovery()
    disc.start()
    uid = pod["metadata"]["uid"]
    wait_for(lambda: uid in disc.index.pods)
    pod["metadata"]["labels"] = {"v": "2"}
    api.apply(pod)
    wait_for(lambda: disc.index.pods[uid].labels == {"v": "2"}, what="MODIFIED labels")
    pod["status"]["phase"] = "Succeeded"
    api.apply(pod)
    wait_for(lambda: uid not in disc.index.pods, what="finished pod dropped")


def test_watch_expiry_relists(api: EmulatedCluster, layout: cgroups.CgroupLayout,
                              make_discovery: Callable[..., Discovery]) -> None:
    first = make_pod("first", node=NODE)
    create_pod_cgroups(layout.unified, first, "burstable")
    api.apply(first)
    disc = make_discovery()
    disc.start()
    wait_for(lambda: "first" in _names(disc.index))
    wait_for(lambda: len(_watches(api)) == 1, what="watch open")

    api.expire_watches()
    wait_for(lambda: len(_lists(api)) == 2, what="re-list after 410")
    assert disc.errors_total == 1
    assert "expired" in (disc.last_error or "")
    assert _names(disc.index) == {"first": {"", "app"}}  # nothing lost meanwhile

    # The new watch starts from the re-listed version and keeps delivering.
    second = make_pod("second", node=NODE)
    create_pod_cgroups(layout.unified, second, "burstable")
    api.apply(second)
    wait_for(lambda: "second" in _names(disc.index), what="event after re-list")


def test_server_side_timeout_resumes_without_relist(api: EmulatedCluster, layout: cgroups.CgroupLayout,
                                                    make_discovery: Callable[..., Discovery]) -> None:
    disc = make_discovery(watch_timeout_seconds=1)
    disc.start()
    wait_for(lambda: len(_watches(api)) >= 2, timeout=5, what="second watch after timeout")
    assert len(_lists(api)) == 1
    assert disc.errors_total == 0
    pod = make_pod("after", node=NODE)
    create_pod_cgroups(layout.unified, pod, "burstable")
    api.apply(pod)
    wait_for(lambda: "after" in _names(disc.index))


def test_cgroup_created_after_the_pod_is_listed(api: EmulatedCluster, layout: cgroups.CgroupLayout,
                                                 make_discovery: Callable[..., Discovery]) -> None:
    pod = make_pod("slowstart", node=NODE)
    api.apply(pod)
    disc = make_discovery()
    disc.start()
    wait_for(lambda: pod["metadata"]["uid"] in disc.index.unresolved, what="listed, unresolved")
    create_pod_cgroups(layout.unified, pod, "burstable")  # no API event: the interval re-resolve finds it
    wait_for(lambda: _names(disc.index).get("slowstart") == {"", "app"}, what="re-resolved")
    paths = create_pod_cgroups(layout.unified, pod, "burstable")
    remove_cgroup_tree(layout.unified / paths["app"])
    wait_for(lambda: _names(disc.index).get("slowstart") == {""}, what="container cgroup gone")


def test_api_failure_keeps_index_and_recovers(api: EmulatedCluster, layout: cgroups.CgroupLayout,
                                              make_discovery: Callable[..., Discovery]) -> None:
    pod = make_pod("steady", node=NODE)
    create_pod_cgroups(layout.unified, pod, "guaranteed")
    api.apply(pod)
    disc = make_discovery()
    assert disc.refresh() is disc.index and disc.synced  # the synchronous startup list
    good = disc.index
    api.fail_with(500)
    api.expire_watches()  # drop the watch, so the next list meets the failure
    disc.start()
    wait_for(lambda: disc.errors_total >= 3, what="failing re-lists")
    assert disc.index is good
    api.fail_with(None)
    newer = make_pod("newer", node=NODE)
    create_pod_cgroups(layout.unified, newer, "burstable")
    api.apply(newer)
    wait_for(lambda: set(_names(disc.index)) == {"steady", "newer"}, what="recovery")


def test_unreachable_api_server(layout: cgroups.CgroupLayout) -> None:
    import kubernetes.client

    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host="http://127.0.0.1:9"))
    disc = Discovery(DiscoveryConfig(mode="informer"), NODE, cgroups.CgroupResolver(layout), api_client=client)
    index = disc.refresh()
    assert index == PodIndex() and not disc.synced and disc.errors_total == 1


def test_stop_interrupts_an_idle_watch(api: EmulatedCluster, make_discovery: Callable[..., Discovery]) -> None:
    disc = make_discovery()
    disc.start()
    wait_for(lambda: len(_watches(api)) == 1, what="watch open")
    time.sleep(0.2)  # blocked reading the stream
    threads = list(disc._threads)
    started = time.monotonic()
    disc.stop()
    assert time.monotonic() - started < 1.5
    assert threads and not any(t.is_alive() for t in threads)


def service(name: str, namespace: str = "shop", **spec: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"port": 80}], **spec}}


def test_service_cluster_ips_follow_the_api(api: EmulatedCluster, make_discovery: Callable[..., Discovery]) -> None:
    api.apply(service("web", clusterIP="10.96.0.10", clusterIPs=["10.96.0.10", "fd00::10"]))
    api.apply(service("headless", clusterIP="None"))
    disc = make_discovery()
    disc.start()
    wait_for(lambda: disc.services == {"10.96.0.10": ("shop", "web"), "fd00::10": ("shop", "web")},
             what="listed Service")
    api.apply(service("db", namespace="data", clusterIP="10.96.0.20"))
    wait_for(lambda: disc.services.get("10.96.0.20") == ("data", "db"), what="Service added via watch")
    api.delete("services", "shop", "web")
    wait_for(lambda: disc.services == {"10.96.0.20": ("data", "db")}, what="Service deleted via watch")
    # All namespaces, listed once, then watched from the listed version.
    assert len(_lists(api, "services")) == 1
    assert "fieldSelector" not in _watches(api, "services")[0].params

