"""Pod JSON -> PodInfo, PodList parsing and PodIndex behaviour (no I/O)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from kpod_agent import discovery
from kpod_agent.config import DiscoveryConfig
from kpod_agent.pods import CgroupEntry, ContainerInfo, PodIndex, PodInfo, pod_from_api
from tests.support.fake_kubelet import make_pod

# A pod as the kubelet's /pods returns it (trimmed from a real kind node).
KUBELET_POD = json.loads("""
{
  "metadata": {
    "name": "coredns-5d78c9869d-x7k2p", "generateName": "coredns-5d78c9869d-",
    "namespace": "kube-system", "uid": "3f0c1b4e-8a2d-4f6b-9c1e-7d5a2b8e9f10",
    "resourceVersion": "612", "creationTimestamp": "2026-01-01T10:00:00Z",
    "labels": {"k8s-app": "kube-dns", "pod-template-hash": "5d78c9869d"},
    "annotations": {"kubernetes.io/config.seen": "2026-01-01T10:00:05Z", "kubernetes.io/config.source": "api"},
    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "coredns-5d78c9869d",
                         "uid": "aa", "controller": true, "blockOwnerDeletion": true}]
  },
  "spec": {
    "containers": [{"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.10.1",
                    "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}}}],
    "nodeName": "kind-control-plane", "priorityClassName": "system-cluster-critical"
  },
  "status": {
    "phase": "Running", "qosClass": "Burstable", "hostIP": "172.18.0.2", "podIP": "10.244.0.3",
    "conditions": [{"type": "Ready", "status": "True"}],
    "containerStatuses": [{
      "name": "coredns", "ready": true, "restartCount": 2, "started": true,
      "state": {"running": {"startedAt": "2026-01-01T10:00:07Z"}},
      "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://0ld"}},
      "image": "registry.k8s.io/coredns/coredns:v1.10.1", "imageID": "sha256:ead0",
      "containerID": "containerd://ead0a4a53df89fd173874b46093b6e62d8c72967bbf606d672c9e8c9b601a4fc"
    }]
  }
}
""")


def test_pod_from_real_kubelet_item() -> None:
    pod = pod_from_api(KUBELET_POD)
    assert pod == PodInfo(
        uid="3f0c1b4e-8a2d-4f6b-9c1e-7d5a2b8e9f10", namespace="kube-system", name="coredns-5d78c9869d-x7k2p",
        labels={"k8s-app": "kube-dns", "pod-template-hash": "5d78c9869d"}, qos_class="Burstable",
        containers=(ContainerInfo("coredns", "containerd",
                                  "ead0a4a53df89fd173874b46093b6e62d8c72967bbf606d672c9e8c9b601a4fc", 2),),
        node_name="kind-control-plane", ips=("10.244.0.3",),
    )


def test_static_pod_mirror_uses_the_kubelet_uid() -> None:
    doc = copy.deepcopy(KUBELET_POD)
    doc["metadata"]["annotations"]["kubernetes.io/config.mirror"] = "c4a9f0e0b1d2"
    pod = pod_from_api(doc)
    assert pod is not None and pod.uid == "c4a9f0e0b1d2"


def test_pending_pod_without_container_statuses_is_kept() -> None:
    doc = make_pod("starting", containers={"app": None}, phase="Pending", qos=None)
    assert "containerStatuses" not in doc["status"]
    pod = pod_from_api(doc)
    assert pod is not None
    assert pod.containers == () and pod.qos_class is None


def test_waiting_container_has_no_id_but_keeps_restarts() -> None:
    doc = make_pod("crashing", containers={"app": "cri-o://abc", "broken": None}, restarts={"broken": 7})
    pod = pod_from_api(doc)
    assert pod is not None
    assert pod.containers == (ContainerInfo("app", "cri-o", "abc", 0), ContainerInfo("broken", "", "", 7))


def test_init_and_ephemeral_containers_are_included() -> None:
    doc = make_pod("p", containers={"app": "docker://a1"}, init_containers={"setup": "docker://b2"})
    doc["status"]["ephemeralContainerStatuses"] = [{"name": "debug", "containerID": "docker://c3", "restartCount": 0}]
    pod = pod_from_api(doc)
    assert pod is not None
    assert [(c.name, c.container_id) for c in pod.containers] == [("setup", "b2"), ("app", "a1"), ("debug", "c3")]


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_finished_pods_have_no_cgroup(phase: str) -> None:
    assert pod_from_api(make_pod("done", phase=phase)) is None


@pytest.mark.parametrize("mutate", [
    lambda d: d["spec"].pop("nodeName"),
    lambda d: d["metadata"].pop("uid"),
    lambda d: d["metadata"].pop("name"),
    lambda d: d["metadata"].update(namespace=""),
    lambda d: d.update(metadata="nope"),
    lambda d: d.update(spec=None),
])
def test_unusable_pods_are_none(mutate) -> None:  # noqa: ANN001
    doc = make_pod("x")
    mutate(doc)
    assert pod_from_api(doc) is None


@pytest.mark.parametrize("garbage", [None, 3, "pod", [], {}])
def test_garbage_is_none(garbage: object) -> None:
    assert pod_from_api(garbage) is None  # type: ignore[arg-type]


def test_odd_field_types_do_not_crash() -> None:
    doc = make_pod("x", containers={"app": "containerd://a"})
    doc["metadata"]["labels"] = {"a": 1, "b": None}
    doc["status"]["containerStatuses"][0]["restartCount"] = "many"
    doc["status"]["containerStatuses"].append({"name": 5})
    doc["status"]["containerStatuses"].append({"name": "bad-id", "containerID": "nonsense"})
    doc["status"]["qosClass"] = 7
    pod = pod_from_api(doc)
    assert pod is not None
    assert pod.labels == {"a": "1"}
    assert pod.qos_class is None
    assert pod.containers == (ContainerInfo("app", "containerd", "a", 0), ContainerInfo("bad-id", "", "", 0))


def test_parse_pod_list() -> None:
    items = [make_pod("a"), make_pod("b", phase="Succeeded"), {"bogus": True}]
    pods = discovery.parse_pod_list({"kind": "PodList", "items": items})
    assert [p.name for p in pods] == ["a"]
    assert discovery.parse_pod_list({"kind": "PodList", "items": None}) == []
    for bad in ([], "x", {"items": "x"}, {"kind": "Status"}):
        with pytest.raises(discovery.SourceError):
            discovery.parse_pod_list(bad)


def _entry(cid: int, rel: str, container: str = "", uid: str = "u1") -> CgroupEntry:
    return CgroupEntry(cid, rel, "ns", "pod", container, uid)


def test_pod_index_equality_drives_change_detection() -> None:
    pod = PodInfo("u1", "ns", "pod", {"a": "1"}, None, ())
    one = PodIndex(entries={1: _entry(1, "p")}, pods={"u1": pod}, pod_paths={"u1": "p"})
    same = PodIndex(entries={1: _entry(1, "p")}, pods={"u1": pod}, pod_paths={"u1": "p"})
    relabelled = PodIndex(entries={1: _entry(1, "p")}, pods={"u1": PodInfo("u1", "ns", "pod", {"a": "2"}, None, ())},
                          pod_paths={"u1": "p"})
    assert one == same
    assert one != relabelled
    assert one != PodIndex()


def test_pod_index_queries() -> None:
    index = PodIndex(
        entries={3: _entry(3, "p/c/x", "c"), 1: _entry(1, "p"), 2: _entry(2, "p/c", "c"), 9: _entry(9, "q", uid="u2")},
        pod_paths={"u1": "p", "u2": "q"},
    )
    assert index.lookup(2) == _entry(2, "p/c", "c")
    assert index.lookup(42) is None
    assert [e.cgroup_id for e in index.pod_cgroups("u1")] == [1, 2, 3]
    assert index.container_paths("u1") == {"": "p", "c": "p/c"}
    # The returned list is a copy: callers cannot corrupt the snapshot.
    index.pod_cgroups("u1").clear()
    assert len(index.pod_cgroups("u1")) == 3


def test_informer_needs_an_api_client(tmp_path: Path) -> None:
    from kpod_agent import cgroups

    resolver = cgroups.CgroupResolver(cgroups.CgroupLayout(unified=tmp_path))
    with pytest.raises(ValueError, match="api_client"):
        discovery.Discovery(DiscoveryConfig(mode="informer"), "node-1", resolver)


def test_backoff_grows_and_is_capped(tmp_path: Path) -> None:
    from kpod_agent import cgroups

    resolver = cgroups.CgroupResolver(cgroups.CgroupLayout(unified=tmp_path / "missing"))
    disc = discovery.Discovery(DiscoveryConfig(mode="none", interval="1s"), "n", resolver, max_backoff=5)
    delays = []
    for _ in range(5):
        disc.refresh()  # the cgroup root is missing: every refresh fails
        delays.append(disc._next_delay())
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert disc.errors_total == 5 and not disc.synced
    tmp_path.joinpath("missing").mkdir()
    disc.refresh()
    assert disc.synced and disc._next_delay() == 1.0 and disc.errors_total == 5
