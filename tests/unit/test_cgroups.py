"""Cgroup layout detection and the kubelet cgroup resolver, on real directory trees.

The trees are temporary directories made with mkdir: their inode numbers are
real, so they stand in for cgroup ids exactly as the cgroup2 filesystem does.
"""
from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path

import pytest

from kpod_agent import cgroups
from kpod_agent.pods import ContainerInfo, PodInfo, parse_container_id, pod_from_api
from tests.support import fake_kubelet

HYBRID_MOUNTS = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,relatime,blkio 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""

PURE_V2_MOUNTS = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0
"""

COMOUNTED_MOUNTS = """\
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/net_cls,net_prio cgroup rw,relatime,net_cls,net_prio 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
"""

V1_ONLY_MOUNTS = """\
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
"""


def _mounts(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mounts"
    path.write_text(text)
    return str(path)


# -- detect_layout -------------------------------------------------------------


def test_detect_hybrid(tmp_path: Path) -> None:
    layout = cgroups.detect_layout("auto", _mounts(tmp_path, HYBRID_MOUNTS))
    assert layout.unified == Path("/sys/fs/cgroup/unified")
    assert layout.hybrid
    assert layout.v1 == {
        "cpu": Path("/sys/fs/cgroup/cpu"), "cpuacct": Path("/sys/fs/cgroup/cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"), "blkio": Path("/sys/fs/cgroup/blkio"),
        "pids": Path("/sys/fs/cgroup/pids"),
    }
    assert layout.controller_dir("kubepods/pod1", "memory") == Path("/sys/fs/cgroup/memory/kubepods/pod1")
    # Controllers without a v1 hierarchy fall back to the unified directory.
    assert layout.controller_dir("kubepods/pod1", "io") == Path("/sys/fs/cgroup/unified/kubepods/pod1")
    assert layout.controller_dir("", "cpu") == Path("/sys/fs/cgroup/cpu")


def test_detect_pure_v2(tmp_path: Path) -> None:
    layout = cgroups.detect_layout("auto", _mounts(tmp_path, PURE_V2_MOUNTS))
    assert layout == cgroups.CgroupLayout(unified=Path("/sys/fs/cgroup"), v1={})
    assert not layout.hybrid
    assert layout.controller_dir("a/b", "memory") == Path("/sys/fs/cgroup/a/b")


def test_detect_comounted_controllers(tmp_path: Path) -> None:
    layout = cgroups.detect_layout("auto", _mounts(tmp_path, COMOUNTED_MOUNTS))
    assert layout.v1["cpu"] == layout.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert layout.v1["net_prio"] == Path("/sys/fs/cgroup/net_cls,net_prio")


def test_detect_prefers_host_tree_and_unescapes(tmp_path: Path) -> None:
    text = (
        "cgroup2 /run/some\\040thing cgroup2 rw 0 0\n"
        "cgroup2 /host/sys/fs/cgroup cgroup2 rw 0 0\n"
    )
    assert cgroups.detect_layout("auto", _mounts(tmp_path, text)).unified == Path("/host/sys/fs/cgroup")
    only = cgroups.detect_layout("auto", _mounts(tmp_path, "cgroup2 /run/some\\040thing cgroup2 rw 0 0\n"))
    assert only.unified == Path("/run/some thing")


@pytest.mark.parametrize("text", [V1_ONLY_MOUNTS, "", "garbage line\n\n"])
def test_detect_without_cgroup2_is_a_clear_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(cgroups.CgroupError, match="no cgroup2"):
        cgroups.detect_layout("auto", _mounts(tmp_path, text))
    assert issubclass(cgroups.CgroupError, RuntimeError)


def test_detect_unreadable_mounts(tmp_path: Path) -> None:
    with pytest.raises(cgroups.CgroupError, match="cannot read"):
        cgroups.detect_layout("auto", str(tmp_path / "missing"))


def test_explicit_unified_root_finds_sibling_v1(tmp_path: Path) -> None:
    for name in ("unified", "cpu,cpuacct", "memory", "systemd"):
        (tmp_path / name).mkdir()
    (tmp_path / "cpu").symlink_to(tmp_path / "cpu,cpuacct")
    layout = cgroups.detect_layout(str(tmp_path / "unified"))
    assert layout.unified == tmp_path / "unified"
    assert layout.v1 == {"cpu": tmp_path / "cpu", "cpuacct": tmp_path / "cpu,cpuacct", "memory": tmp_path / "memory"}


def test_explicit_parent_of_unified_steps_down(tmp_path: Path) -> None:
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("")
    (tmp_path / "memory").mkdir()
    layout = cgroups.detect_layout(str(tmp_path))
    assert layout.unified == tmp_path / "unified"
    assert layout.v1 == {"memory": tmp_path / "memory"}


def test_explicit_plain_root_is_pure_v2(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    assert cgroups.detect_layout(str(tmp_path)) == cgroups.CgroupLayout(unified=tmp_path, v1={})
    with pytest.raises(cgroups.CgroupError, match="not a directory"):
        cgroups.detect_layout(str(tmp_path / "nope"))


# -- ids -------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("containerd://abc123", ("containerd", "abc123")),
    ("cri-o://f00d", ("cri-o", "f00d")),
    ("docker://0123456789abcdef", ("docker", "0123456789abcdef")),
])
def test_parse_container_id(raw: str, expected: tuple[str, str]) -> None:
    assert parse_container_id(raw) == expected


@pytest.mark.parametrize("raw", ["", "abc", "containerd://", "://abc", "containerd:/abc", "containerd://a/b"])
def test_parse_container_id_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_container_id(raw)


@pytest.mark.parametrize(("name", "ident"), [
    ("cri-containerd-abc.scope", "abc"), ("crio-abc.scope", "abc"), ("docker-abc.scope", "abc"),
    ("crio-abc", "abc"), ("abc", "abc"),
])
def test_container_id_from_dirname(name: str, ident: str) -> None:
    assert cgroups.container_id_from_dirname(name) == ident


def test_cgroup_id_is_the_inode(tmp_path: Path) -> None:
    assert cgroups.cgroup_id(tmp_path) == os.stat(tmp_path).st_ino


# -- resolver: both drivers x 3 QoS x 3 runtimes ----------------------------------


RUNTIMES = ("containerd", "cri-o", "docker")
DRIVERS = ("systemd", "cgroupfs")


def _layout(tmp_path: Path) -> cgroups.CgroupLayout:
    unified = tmp_path / "unified"
    unified.mkdir()
    return cgroups.CgroupLayout(unified=unified, v1={"memory": tmp_path / "memory", "cpu": tmp_path / "cpu"})


def _pod(runtime: str, qos: str | None, uid: str | None = None, **kw: object) -> dict:
    ids = {"app": f"{runtime}://{uuid.uuid4().hex * 2}", "sidecar": f"{runtime}://{uuid.uuid4().hex * 2}"}
    return fake_kubelet.make_pod(f"p-{uuid.uuid4().hex[:6]}", uid=uid or str(uuid.uuid4()),
                                 containers=ids, qos=qos, **kw)


@pytest.mark.parametrize(("driver", "qos", "runtime"), list(itertools.product(DRIVERS, cgroups.QOS_CLASSES, RUNTIMES)))
def test_resolve_every_layout(tmp_path: Path, driver: str, qos: str, runtime: str) -> None:
    layout = _layout(tmp_path)
    doc = _pod(runtime, qos=None)  # no qosClass in the status: the resolver must search
    paths = fake_kubelet.create_pod_cgroups(layout.unified, doc, qos, driver, v1=layout.v1)
    pod = pod_from_api(doc)
    assert pod is not None and pod.qos_class is None
    resolver = cgroups.CgroupResolver(layout)

    assert resolver.pod_dir(pod.uid) == paths[""]
    for c in pod.containers:
        assert resolver.container_dir(paths[""], c.runtime, c.container_id) == paths[c.name]

    index = resolver.resolve([pod])
    assert index.unresolved == ()
    assert index.pod_paths == {pod.uid: paths[""]}
    pod_id = os.stat(layout.unified / paths[""]).st_ino
    assert index.lookup(pod_id) == cgroups_entry(pod_id, paths[""], pod, "")
    for name in ("app", "sidecar"):
        cid = os.stat(layout.unified / paths[name]).st_ino
        assert index.lookup(cid) == cgroups_entry(cid, paths[name], pod, name)
    assert len(index.entries) == 3
    # The hybrid mirror: the same relative path holds the v1 controller files.
    assert layout.controller_dir(paths["app"], "memory").is_dir()


def cgroups_entry(cid: int, rel: str, pod: PodInfo, container: str):  # noqa: ANN201
    from kpod_agent.pods import CgroupEntry

    return CgroupEntry(cgroup_id=cid, relpath=rel, namespace=pod.namespace, pod=pod.name,
                       container=container, pod_uid=pod.uid)


@pytest.mark.parametrize("driver", DRIVERS)
def test_wrong_qos_hint_still_found(tmp_path: Path, driver: str) -> None:
    layout = _layout(tmp_path)
    doc = _pod("containerd", qos="guaranteed")
    paths = fake_kubelet.create_pod_cgroups(layout.unified, doc, "besteffort", driver)
    resolver = cgroups.CgroupResolver(layout)
    assert resolver.pod_dir(doc["metadata"]["uid"], "Guaranteed") == paths[""]
    # The hint only orders the search.
    assert resolver.pod_dir_candidates("u", "BestEffort")[0].endswith("besteffort-podu.slice")


def test_descendants_belong_to_their_container(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    doc = _pod("containerd", qos="burstable")
    paths = fake_kubelet.create_pod_cgroups(layout.unified, doc, "burstable")
    # systemd running inside the app container, and the pod's sandbox (pause) container.
    (layout.unified / paths["app"] / "init.scope").mkdir()
    (layout.unified / paths["app"] / "system.slice" / "nginx.service").mkdir(parents=True)
    sandbox = f"{paths['']}/cri-containerd-{'5a' * 32}.scope"
    (layout.unified / sandbox).mkdir()
    pod = pod_from_api(doc)
    assert pod is not None
    index = cgroups.CgroupResolver(layout).resolve([pod])

    by_path = {e.relpath: e.container for e in index.entries.values()}
    assert by_path == {
        paths[""]: "", sandbox: "",
        paths["app"]: "app", f"{paths['app']}/init.scope": "app",
        f"{paths['app']}/system.slice": "app", f"{paths['app']}/system.slice/nginx.service": "app",
        paths["sidecar"]: "sidecar",
    }
    assert index.pod_cgroups(pod.uid)[0].relpath == paths[""]
    assert len(index.pod_cgroups(pod.uid)) == 7
    assert index.container_paths(pod.uid) == {"": paths[""], "app": paths["app"], "sidecar": paths["sidecar"]}
    assert index.pod_cgroups("other") == []


def test_missing_cgroups_are_reported_not_fatal(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    present = _pod("containerd", qos="besteffort")
    paths = fake_kubelet.create_pod_cgroups(layout.unified, present, "besteffort", "cgroupfs")
    # The sidecar's directory is not there yet: only the app container resolves.
    os.rmdir(layout.unified / paths["sidecar"])
    absent = _pod("cri-o", qos="burstable")
    pods = [pod_from_api(present), pod_from_api(absent)]
    assert all(pods)
    resolver = cgroups.CgroupResolver(layout)
    index = resolver.resolve(p for p in pods if p is not None)

    assert index.unresolved == (absent["metadata"]["uid"],)
    assert set(index.pods) == {present["metadata"]["uid"], absent["metadata"]["uid"]}
    assert sorted(e.container for e in index.entries.values()) == ["", "app"]
    assert resolver.pod_dir(absent["metadata"]["uid"]) is None
    assert resolver.container_dir(paths[""], "containerd", "f" * 64) is None
    assert resolver.pod_dir("../../etc") is None


def test_unknown_runtime_naming_found_by_id(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    rel = fake_kubelet.pod_cgroup_relpath("u-1", "burstable")
    (layout.unified / rel / "containerd-abc.scope").mkdir(parents=True)
    resolver = cgroups.CgroupResolver(layout)
    assert resolver.container_dir(rel, "containerd", "abc") == f"{rel}/containerd-abc.scope"


@pytest.mark.parametrize(("root", "driver"), [
    ("kubelet.slice/kubelet-kubepods.slice", "systemd"),
    ("kubelet/kubepods", "cgroupfs"),
])
def test_custom_kubepods_roots(tmp_path: Path, root: str, driver: str) -> None:
    layout = _layout(tmp_path)
    doc = _pod("containerd", qos="burstable")
    paths = fake_kubelet.create_pod_cgroups(layout.unified, doc, "burstable", driver, root=root)
    uid = doc["metadata"]["uid"]
    assert cgroups.CgroupResolver(layout).pod_dir(uid) is None
    assert cgroups.CgroupResolver(layout, kubepods_roots=(root,)).pod_dir(uid) == paths[""]


def test_init_containers_resolve(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    doc = fake_kubelet.make_pod("p", containers={"app": None}, init_containers={"setup": "containerd://" + "ab" * 32},
                                phase="Pending")
    paths = fake_kubelet.create_pod_cgroups(layout.unified, doc, "burstable")
    pod = pod_from_api(doc)
    assert pod is not None
    index = cgroups.CgroupResolver(layout).resolve([pod])
    assert sorted(e.container for e in index.entries.values()) == ["", "setup"]
    assert index.lookup(os.stat(layout.unified / paths["setup"]).st_ino).container == "setup"  # type: ignore[union-attr]


# -- mode none ---------------------------------------------------------------------


def test_host_index_and_lookup_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = _layout(tmp_path)
    for rel in ("system.slice/ssh.service", "user.slice/user-0.slice", "init.scope"):
        (layout.unified / rel).mkdir(parents=True)
    resolver = cgroups.CgroupResolver(layout)
    index = resolver.host_index()
    labels = {e.pod for e in index.entries.values()}
    assert labels == {"/", "system.slice", "system.slice/ssh.service", "user.slice",
                      "user.slice/user-0.slice", "init.scope"}
    ssh_id = os.stat(layout.unified / "system.slice/ssh.service").st_ino
    entry = index.lookup(ssh_id)
    assert entry is not None
    assert (entry.namespace, entry.pod, entry.container, entry.relpath) == \
        ("host", "system.slice/ssh.service", "", "system.slice/ssh.service")
    assert index.lookup(os.stat(layout.unified).st_ino).pod == "/"  # type: ignore[union-attr]
    assert set(index.pods) == labels and index.pod_paths["/"] == ""

    # A cgroup created after the walk: found by lookup_path once a re-walk is allowed.
    (layout.unified / "system.slice/new.service").mkdir()
    new_id = os.stat(layout.unified / "system.slice/new.service").st_ino
    monkeypatch.setattr(cgroups, "REWALK_INTERVAL", 3600.0)
    assert resolver.lookup_path(new_id) is None  # rate-limited: no walk yet
    assert resolver.lookup_path(ssh_id) == "system.slice/ssh.service"  # cached
    monkeypatch.setattr(cgroups, "REWALK_INTERVAL", 0.0)
    assert resolver.lookup_path(new_id) == "system.slice/new.service"
    assert resolver.lookup_path(12345678901) is None


def test_host_walk_is_bounded(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    for i in range(30):
        (layout.unified / f"c{i}").mkdir()
    index = cgroups.CgroupResolver(layout, max_host_cgroups=10).host_index()
    assert len(index.entries) == 10


def test_host_index_on_vanished_root(tmp_path: Path) -> None:
    layout = cgroups.CgroupLayout(unified=tmp_path / "gone")
    with pytest.raises(cgroups.CgroupError):
        cgroups.CgroupResolver(layout).host_index()


def test_container_info_is_frozen() -> None:
    info = ContainerInfo("a", "containerd", "x", 0)
    with pytest.raises(AttributeError):
        info.name = "b"  # type: ignore[misc]
