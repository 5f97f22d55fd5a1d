"""The resolver on this machine's real cgroup filesystem (root only).

Kubelet-style pod and container cgroups are created under a unique top cgroup
(``kpodtest-<pid>-<rand>.slice`` / ``kpodtest-<pid>-<rand>/kubepods``) so
parallel runs and a real kubelet never collide; a process is moved in the way
kubelet and the runtime do it (cgroup.procs of the cgroup2 directory and of
every v1 hierarchy on hybrid hosts), and the ids the resolver computes must be
the ones /proc/<pid>/cgroup points at.
"""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpod_agent import cgroups
from kpod_agent.config import DiscoveryConfig
from kpod_agent.discovery import Discovery
from kpod_agent.pods import pod_from_api
from tests.support.fake_kubelet import create_pod_cgroups, make_pod, remove_cgroup_tree

# The hierarchies kubelet keeps per pod and the agent reads stat files from.
V1_USED = ("cpu", "cpuacct", "memory", "blkio", "pids")


@pytest.fixture(scope="module", autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        reason = "creating cgroups needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: under CI=true this test must run, not skip")
        pytest.skip(reason)


@pytest.fixture()
def layout() -> cgroups.CgroupLayout:
    real = cgroups.detect_layout()
    return cgroups.CgroupLayout(unified=real.unified, v1={c: p for c, p in real.v1.items() if c in V1_USED})


@pytest.fixture()
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _top(root: str) -> str:
    return root.split("/", 1)[0]


@pytest.fixture()
def cleanup(layout: cgroups.CgroupLayout) -> Iterator[list[str]]:
    """Top-level cgroups to remove from every hierarchy after the test.

    Tasks still inside are moved to the hierarchy's root first: a cgroup
    with tasks cannot be removed."""
    tops: list[str] = []
    yield tops
    for top in tops:
        for base in [layout.unified, *layout.v1.values()]:
            if not (base / top).exists():
                continue
            for dirpath, _, _ in os.walk(base / top, topdown=False):
                for pid in Path(dirpath, "cgroup.procs").read_text().split():
                    try:
                        (base / "cgroup.procs").write_text(pid)
                    except OSError:  # exited meanwhile
                        pass
            deadline = time.monotonic() + 2
            while True:
                try:
                    remove_cgroup_tree(base / top)
                    break
                except OSError:  # EBUSY while an exiting task is still attached
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def _move(layout: cgroups.CgroupLayout, rel: str, pid: int) -> None:
    for base in [layout.unified, *layout.v1.values()]:
        (base / rel / "cgroup.procs").write_text(f"{pid}\n")


def _proc_cgroups(pid: int) -> dict[str, str]:
    """hierarchy -> path from /proc/<pid>/cgroup ("" for cgroup2)."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            out[controller] = path
    return out


def test_layout_of_this_machine() -> None:
    layout = cgroups.detect_layout()
    assert (layout.unified / "cgroup.procs").exists()
    # The root of a cgroup2 hierarchy always has id 1.
    assert cgroups.cgroup_id(layout.unified) == 1
    for controller, path in layout.v1.items():
        assert path.is_dir(), controller
    if layout.hybrid:
        assert layout.unified.name == "unified"
        assert (layout.controller_dir("", "memory") / "memory.stat").exists()


@pytest.mark.parametrize(("driver", "qos", "runtime"), [
    ("systemd", "burstable", "containerd"),
    ("systemd", "guaranteed", "cri-o"),
    ("cgroupfs", "besteffort", "docker"),
    ("cgroupfs", "guaranteed", "containerd"),
])
def test_real_cgroup_ids_match_proc(driver: str, qos: str, runtime: str, layout: cgroups.CgroupLayout,
                                    sleeper: subprocess.Popen[bytes], cleanup: list[str]) -> None:
    tag = f"kpodtest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    root = f"{tag}.slice" if driver == "systemd" else f"{tag}/kubepods"
    cleanup.append(_top(root))
    doc = make_pod("real", containers={"app": f"{runtime}://{uuid.uuid4().hex * 2}"}, qos=None)
    paths = create_pod_cgroups(layout.unified, doc, qos, driver, root=root, v1=layout.v1)
    # systemd running inside the container: a descendant cgroup.
    inner = f"{paths['app']}/init.scope"
    for base in [layout.unified, *layout.v1.values()]:
        (base / inner).mkdir()
    _move(layout, inner, sleeper.pid)

    seen = _proc_cgroups(sleeper.pid)
    assert seen[""] == f"/{inner}"
    for controller in layout.v1:
        assert seen[controller] == f"/{inner}", controller

    pod = pod_from_api(doc)
    assert pod is not None
    resolver = cgroups.CgroupResolver(layout, kubepods_roots=(root,))
    assert resolver.pod_dir(pod.uid) == paths[""]
    index = resolver.resolve([pod])
    # The id BPF reports for the task: the inode of the cgroup2 directory /proc names.
    task_id = os.stat(layout.unified / seen[""].lstrip("/")).st_ino
    entry = index.lookup(task_id)
    assert entry is not None
    assert (entry.pod, entry.container, entry.relpath, entry.pod_uid) == ("real", "app", inner, pod.uid)
    assert index.lookup(cgroups.cgroup_id(layout.unified / paths[""])).container == ""  # type: ignore[union-attr]
    assert index.container_paths(pod.uid) == {"": paths[""], "app": paths["app"]}

    # The stat files the collectors read: v1 hierarchies on hybrid hosts, the same dir on v2.
    stat_files = {"memory": "memory.stat", "cpu": "cpu.stat", "blkio": "blkio.throttle.io_service_bytes"} \
        if layout.hybrid else {"memory": "memory.stat", "cpu": "cpu.stat", "io": "io.stat"}
    for controller, name in stat_files.items():
        assert (layout.controller_dir(paths["app"], controller) / name).exists(), (controller, name)


def test_mode_none_sees_a_new_cgroup(layout: cgroups.CgroupLayout, sleeper: subprocess.Popen[bytes],
                                     cleanup: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    top = f"kpodtest-{os.getpid()}-{uuid.uuid4().hex[:6]}.slice"
    cleanup.append(top)
    resolver = cgroups.CgroupResolver(layout)
    disc = Discovery(DiscoveryConfig(mode="none"), "n", resolver)
    disc.refresh()
    (layout.unified / top / "job.scope").mkdir(parents=True)
    (layout.unified / top / "job.scope" / "cgroup.procs").write_text(f"{sleeper.pid}\n")
    task_id = os.stat(layout.unified / _proc_cgroups(sleeper.pid)[""].lstrip("/")).st_ino
    assert disc.index.lookup(task_id) is None  # created after the walk
    # The kernel resolves the id at once, without waiting for a re-walk.
    monkeypatch.setattr(cgroups, "REWALK_INTERVAL", 3600.0)
    assert resolver.lookup_path(task_id) == f"{top}/job.scope"
    assert cgroups.path_by_id(layout.unified, task_id) == f"{top}/job.scope"
    assert cgroups.path_by_id(layout.unified, 1) == ""
    (layout.unified / top / "gone.scope").mkdir()
    gone_id = cgroups.cgroup_id(layout.unified / top / "gone.scope")
    (layout.unified / top / "gone.scope").rmdir()
    assert resolver.lookup_path(gone_id) is None
    index = disc.refresh()
    entry = index.lookup(task_id)
    assert entry is not None
    assert (entry.namespace, entry.pod, entry.container) == ("host", f"{top}/job.scope", "")
