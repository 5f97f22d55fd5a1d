"""The catalogue's pure parts: file parsers, record layouts, hierarchy
selection, and the cgroup collectors over fake cgroup and proc trees."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from kpod_agent.cgroups import CgroupLayout
from kpod_agent.collectors import REGISTRY
from kpod_agent.collectors.base import BpfCollector, CgroupTarget, CollectorContext, cgroup_pid
from kpod_agent.collectors.disk_io import DiskIOCollector, device_name, parse_blkio, parse_io_stat
from kpod_agent.collectors.filesystem import Mount, df_figures, parse_mountinfo, writable_mounts
from kpod_agent.collectors.hardirqs import irq_name
from kpod_agent.collectors.iface_network import parse_net_dev
from kpod_agent.collectors.memory_cgroup import MemoryCgroupCollector, memory_cgroup_figures
from kpod_agent.collectors.softirqs import vector_names
from kpod_agent.collectors.tcpdrop import drop_reasons, record_struct
from kpod_agent.config import COLLECTOR_NAMES, config_from_dict
from kpod_agent.pods import CgroupEntry, PodIndex, PodInfo
from kpod_agent.view import read_targets, top_cgroups

KFREE_SKB_FORMAT = """name: kfree_skb
ID: 1680
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, \
{ 3, "NO_SOCKET" }, { 4, "SOCKET_CLOSE" }, { 128, "MAX" })
"""


def test_every_contract_collector_is_registered() -> None:
    assert set(REGISTRY) == set(COLLECTOR_NAMES)
    names = [spec.name for cls in REGISTRY.values() for spec in cls.specs]
    assert len(names) == len(set(names)), "a metric name is declared by two collectors"


def test_error_slots_cover_every_counted_map_and_reach_cflags() -> None:
    for cls in REGISTRY.values():
        if not issubclass(cls, BpfCollector):
            continue
        slots = cls.error_slots()
        assert sorted(slots.values()) == list(range(len(slots)))
        assert set(cls.cgroup_maps) <= set(slots)
    source_of = {cls.name: cls.source for cls in REGISTRY.values() if issubclass(cls, BpfCollector)}
    bpf_dir = Path(__file__).resolve().parents[2] / "bpf"
    for name, source in source_of.items():
        text = (bpf_dir / source).read_text()
        for used in set(__import__("re").findall(r"KPOD_ERR_(\w+)", text)):
            assert used in REGISTRY[name].error_slots(), f"{source} counts errors of {used} without a slot"


# ---- tcpdrop -------------------------------------------------------------------

def test_drop_reasons_from_format() -> None:
    reasons = drop_reasons(KFREE_SKB_FORMAT)
    assert reasons["NO_SOCKET"] == 3 and reasons["MAX"] == 128
    assert drop_reasons("no table here") == {}


def test_record_struct_places_fields_at_kernel_offsets() -> None:
    text = record_struct("kfree_skb_args", KFREE_SKB_FORMAT, ("reason", "skbaddr", "rx_sk"))
    lines = [line.strip() for line in text.splitlines()]
    assert lines == [
        "struct kfree_skb_args {",
        "u8 __pad0[8];",
        "u64 skbaddr;",
        "u8 __pad16[8];",
        "u64 rx_sk;",
        "u8 __pad32[4];",
        "u32 reason;",
        "} __attribute__((packed));",
    ]


def test_record_struct_arrays_and_missing_fields() -> None:
    fmt = "\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;\n\tfield:const void * skaddr;\toffset:16;\tsize:8;"
    text = record_struct("r", fmt + "\tsigned:0;\n", ("saddr", "skaddr"))
    assert "u8 saddr[28];" in text and "u64 skaddr;" in text
    from kpod_agent.collectors.base import CollectorError

    with pytest.raises(CollectorError, match="rx_sk"):
        record_struct("r", fmt, ("rx_sk",))


# ---- irqs ------------------------------------------------------------------------

def test_softirq_vector_names() -> None:
    fmt = 'print fmt: "vec=%u", REC->vec, __print_symbolic(REC->vec, { 0, "HI" }, { 3, "NET_RX" }, { 9, "RCU" })'
    assert vector_names(fmt) == {0: "hi", 3: "net_rx", 9: "rcu"}


def test_irq_name_from_actions(tmp_path: Path) -> None:
    (tmp_path / "36").mkdir()
    (tmp_path / "36" / "actions").write_text("virtio1-req.0\n")
    (tmp_path / "27").mkdir()
    (tmp_path / "27" / "actions").write_text("\n")
    assert irq_name(36, tmp_path) == "virtio1-req.0"
    assert irq_name(27, tmp_path) == "27"
    assert irq_name(99, tmp_path) == "99"


# ---- hierarchy -------------------------------------------------------------------

def test_read_targets_are_pods_and_container_tops() -> None:
    pod = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podX.slice"
    other = "kubepods.slice/kubepods-podY.slice"
    entries = {e.cgroup_id: e for e in (
        CgroupEntry(1, pod, "ns", "x", "", "X"),
        CgroupEntry(2, f"{pod}/cri-containerd-a.scope", "ns", "x", "a", "X"),
        CgroupEntry(3, f"{pod}/cri-containerd-a.scope/nested", "ns", "x", "a", "X"),
        CgroupEntry(4, f"{pod}/cri-containerd-b.scope", "ns", "x", "b", "X"),
        CgroupEntry(6, f"{pod}/sandbox", "ns", "x", "", "X"),
        CgroupEntry(5, other, "ns", "y", "", "Y"),
    )}
    pods = {uid: PodInfo(uid, "ns", uid.lower(), {}, None, ()) for uid in ("X", "Y")}
    index = PodIndex(entries=entries, pods=pods, pod_paths={"X": pod, "Y": other})
    tops = top_cgroups(index)
    targets = read_targets(index, dict.fromkeys((1, 2, 3, 4, 6), 0), tops)
    assert sorted((t.cgroup_id, t.role) for t in targets) == [(1, "pod"), (2, "container"), (4, "container")]
    assert [t.cgroup_id for t in read_targets(index, {}, tops)] == []
    # no filter (mode none): every cgroup, each its own series
    assert {(t.cgroup_id, t.role) for t in read_targets(index, None, tops)} == {(c, "cgroup") for c in entries}


def test_cgroup_pid_searches_below(tmp_path: Path) -> None:
    pod = tmp_path / "pod"
    (pod / "c1").mkdir(parents=True)
    (pod / "cgroup.procs").write_text("")
    (pod / "c1" / "cgroup.procs").write_text("4242\n4243\n")
    assert cgroup_pid(pod) == 4242
    (tmp_path / "empty").mkdir()
    assert cgroup_pid(tmp_path / "empty") is None
    assert cgroup_pid(tmp_path / "missing") is None


# ---- diskIO ---------------------------------------------------------------------

def test_parse_io_stat() -> None:
    text = ("254:0 rbytes=4096 wbytes=16777216 rios=1 wios=130 dbytes=0 dios=0\n"
            "253:0 rbytes=0 wbytes=0 rios=0 wios=0\ngarbage\n254:0 rbytes=x\n")
    figures = parse_io_stat(text)
    assert figures["254:0"] == {"read_bytes": 4096, "written_bytes": 16777216, "reads": 1, "writes": 130}
    assert figures["253:0"]["writes"] == 0


def test_parse_blkio_v1() -> None:
    bytes_text = ("254:0 Read 8192\n254:0 Write 1048576\n254:0 Sync 0\n254:0 Async 1056768\n"
                  "254:0 Discard 0\n254:0 Total 1056768\nTotal 1056768\n")
    ops_text = "254:0 Read 2\n254:0 Write 8\n254:0 Total 10\nTotal 10\n"
    assert parse_blkio(bytes_text, ops_text) == {
        "254:0": {"read_bytes": 8192, "written_bytes": 1048576, "reads": 2, "writes": 8}}
    assert parse_blkio("Total 0\n", "") == {}


def test_device_name_from_uevent(tmp_path: Path) -> None:
    (tmp_path / "254:0").mkdir()
    (tmp_path / "254:0" / "uevent").write_text("MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n")
    assert device_name("254:0", tmp_path) == "vda"
    assert device_name("8:0", tmp_path) == "8:0"


def _v1_layout(tmp_path: Path, *controllers: str) -> CgroupLayout:
    unified = tmp_path / "unified"
    unified.mkdir()
    v1 = {}
    for controller in controllers:
        (tmp_path / controller).mkdir()
        v1[controller] = tmp_path / controller
    return CgroupLayout(unified=unified, v1=v1)


def test_disk_io_collector_reads_its_targets_and_survives_bad_files(tmp_path: Path) -> None:
    layout = _v1_layout(tmp_path, "blkio")
    pod = "kubepods/burstable/podX"
    for rel, written in ((pod, 300), (f"{pod}/c1", 200), (f"{pod}/c1/nested", 100)):
        d = layout.controller_dir(rel, "blkio")
        d.mkdir(parents=True)
        (d / "blkio.throttle.io_service_bytes_recursive").write_text(f"7:0 Read 0\n7:0 Write {written}\n")
        (d / "blkio.throttle.io_serviced_recursive").write_text("7:0 Read 0\n7:0 Write 1\n")
    collector = DiskIOCollector(CollectorContext(layout=layout))
    collector.attach(config_from_dict({"discovery": {"mode": "kubelet"}}))
    targets = [CgroupTarget(1, pod, "pod"), CgroupTarget(2, f"{pod}/c1", "container")]
    snap = collector.collect(targets)
    written = snap.data["kpod_disk_written_bytes_total"]
    assert {cgid: v for (cgid, _), v in written.items()} == {1: 300.0, 2: 200.0}
    assert {labels for (_, labels) in written} <= {("loop0",), ("7:0",)}
    # a vanished cgroup is skipped silently; an unreadable file is counted
    bad = layout.controller_dir(f"{pod}/c1", "blkio") / "blkio.throttle.io_service_bytes_recursive"
    bad.unlink()
    bad.mkdir()
    snap = collector.collect(targets + [CgroupTarget(9, "kubepods/burstable/podGone", "pod")])
    assert collector.cgroup_read_errors == 1
    assert {cgid for (cgid, _) in snap.data["kpod_disk_written_bytes_total"]} == {1}


# ---- memoryCgroup ------------------------------------------------------------

def test_memory_cgroup_figures_v2(tmp_path: Path) -> None:
    (tmp_path / "memory.current").write_text("1000\n")
    (tmp_path / "memory.peak").write_text("5000\n")
    (tmp_path / "memory.swap.current").write_text("7\n")
    (tmp_path / "memory.stat").write_text("anon 600\nfile 400\n")
    assert memory_cgroup_figures(tmp_path) == {"usage": 1000, "peak": 5000, "cache": 400, "swap": 7}


def test_memory_cgroup_figures_v1_without_swap_accounting(tmp_path: Path) -> None:
    (tmp_path / "memory.usage_in_bytes").write_text("1000\n")
    (tmp_path / "memory.max_usage_in_bytes").write_text("9000\n")
    (tmp_path / "memory.stat").write_text("cache 10\nrss 20\ntotal_cache 300\ntotal_rss 700\n")
    assert memory_cgroup_figures(tmp_path) == {"usage": 1000, "peak": 9000, "cache": 300}
    (tmp_path / "memory.memsw.usage_in_bytes").write_text("1100\n")
    assert memory_cgroup_figures(tmp_path)["swap"] == 100


def test_memory_cgroup_collector_counts_garbage_as_read_error(tmp_path: Path) -> None:
    layout = _v1_layout(tmp_path, "memory")
    good, bad = layout.controller_dir("podA", "memory"), layout.controller_dir("podB", "memory")
    for d in (good, bad):
        d.mkdir()
        (d / "memory.stat").write_text("total_cache 5\n")
        (d / "memory.max_usage_in_bytes").write_text("10\n")
    (good / "memory.usage_in_bytes").write_text("8\n")
    (bad / "memory.usage_in_bytes").write_text("not a number\n")
    collector = MemoryCgroupCollector(CollectorContext(layout=layout))
    collector.attach(config_from_dict({"discovery": {"mode": "kubelet"}}))
    snap = collector.collect([CgroupTarget(1, "podA", "pod"), CgroupTarget(2, "podB", "pod")])
    assert snap.data["kpod_mem_cgroup_usage_bytes"] == {(1, ()): 8.0}
    assert collector.cgroup_read_errors == 1


# ---- ifaceNetwork ----------------------------------------------------------------

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 5057 101 1 2 0 0 0 0 400 4 3 5 0 0 0 0
"""


def test_parse_net_dev() -> None:
    parsed = parse_net_dev(NET_DEV)
    assert parsed["eth0"] == {"rx_bytes": 5057, "rx_packets": 101, "rx_errors": 1, "rx_drops": 2,
                              "tx_bytes": 400, "tx_packets": 4, "tx_errors": 3, "tx_drops": 5}
    assert parsed["lo"]["tx_packets"] == 10
    assert parse_net_dev("eth0: 1 2 3\n") == {}


# ---- filesystem ---------------------------------------------------------------

MOUNTINFO = r"""1600 1500 0:95 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
1601 1600 0:98 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1602 1600 0:99 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1610 1600 254:0 /var/lib/kubelet/pods/u/etc-hosts /etc/hosts rw,relatime - ext4 /dev/vda rw
1611 1600 254:0 /var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/data /data rw,relatime - ext4 /dev/vda rw
1612 1600 0:101 / /var/run/secrets/kubernetes.io/serviceaccount ro,relatime - tmpfs tmpfs rw,size=1024k
1613 1600 254:16 / /mnt/my\040vol rw,relatime - xfs /dev/vdb rw
1614 1600 254:16 / /mnt/ro-super rw,relatime - xfs /dev/vdb ro
1615 1600 254:32 / /data rw,relatime - xfs /dev/vdc rw
"""


def test_parse_mountinfo_and_writable_mounts() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    by_point = {m.mountpoint: m for m in mounts}
    assert by_point["/mnt/my vol"] == Mount("/mnt/my vol", "xfs", "/dev/vdb", False)
    assert by_point["/mnt/ro-super"].read_only
    assert by_point["/data"].source == "/dev/vdc"  # the later mount hides the earlier one
    kept = [m.mountpoint for m in writable_mounts(mounts)]
    assert kept == ["/", "/etc/hosts", "/mnt/my vol", "/data"]


def test_df_figures() -> None:
    st = os.statvfs_result((4096, 4096, 1000, 300, 250, 0, 0, 0, 0, 255))
    assert df_figures(st) == {"capacity": 4096000, "usage": 700 * 4096, "available": 250 * 4096}


# ---- per-pod readers over a fake /proc ------------------------------------------------

def _fake_node(tmp_path: Path) -> tuple[CollectorContext, Path]:
    """cgroup2 tree with pod X (no tasks) and its container c1 (task 42),
    and a /proc where 42 is in its own network and mount namespaces."""
    unified = tmp_path / "cg"
    (unified / "podX" / "c1").mkdir(parents=True)
    (unified / "podX" / "cgroup.procs").write_text("")
    (unified / "podX" / "c1" / "cgroup.procs").write_text("42\n")
    proc = tmp_path / "proc"
    for pid in ("1", "self", "42"):
        (proc / pid / "ns").mkdir(parents=True)
        for kind in ("net", "mnt"):
            (proc / pid / "ns" / kind).write_text(pid)  # a file of its own: its own inode
    ctx = CollectorContext(layout=CgroupLayout(unified=unified), proc_root=str(proc))
    return ctx, proc


TARGETS = [CgroupTarget(1, "podX", "pod"), CgroupTarget(2, "podX/c1", "container")]


def test_iface_collector_reads_pod_netns_once_and_skips_host(tmp_path: Path) -> None:
    from kpod_agent.collectors.iface_network import IfaceNetworkCollector

    ctx, proc = _fake_node(tmp_path)
    (proc / "42" / "net").mkdir()
    (proc / "42" / "net" / "dev").write_text(NET_DEV)
    collector = IfaceNetworkCollector(ctx)
    collector.attach(config_from_dict({"discovery": {"mode": "kubelet"}}))
    snap = collector.collect(TARGETS)
    assert snap.data["kpod_net_iface_rx_packets_total"] == {(1, ("eth0",)): 101.0}
    assert snap.data["kpod_net_iface_tx_drops_total"] == {(1, ("eth0",)): 5.0}
    # task 42 moves to the node's network namespace (hostNetwork): no series
    (proc / "42" / "ns" / "net").unlink()
    os.link(proc / "self" / "ns" / "net", proc / "42" / "ns" / "net")
    assert collector.collect(TARGETS).data == {}
    assert collector.cgroup_read_errors == 0


def test_filesystem_collector_over_fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kpod_agent.collectors import filesystem

    ctx, proc = _fake_node(tmp_path)
    root = proc / "42" / "root"
    (root / "data").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "hosts").write_text("")
    (root / "secret").mkdir()
    (proc / "42" / "mountinfo").write_text(
        "1 0 0:1 / / rw - overlay overlay rw\n"
        "2 1 254:0 /x /data rw,relatime - ext4 /dev/vda rw\n"
        "3 1 254:0 /h /etc/hosts rw,relatime - ext4 /dev/vda rw\n"
        "4 1 0:5 / /secret ro,relatime - tmpfs tmpfs rw\n"
        "garbage line\n")
    collector = filesystem.FilesystemCollector(ctx)
    collector.attach(config_from_dict({"discovery": {"mode": "kubelet"}}))
    try:
        snap = collector.collect(TARGETS)
        st = os.statvfs(root / "data")
        assert snap.data["kpod_fs_capacity_bytes"][(2, ("/data",))] == st.f_blocks * st.f_frsize
        assert {labels for (_, labels) in snap.data["kpod_fs_capacity_bytes"]} == {("/",), ("/data",)}
        assert {cgid for (cgid, _) in snap.data["kpod_fs_usage_bytes"]} == {2}  # containers only

        # a mount whose statvfs hangs is given up after the deadline, then skipped for a while:
        # the hung calls are still blocked when collect() returns, so it did not wait for them
        calls: list[str] = []
        finished: list[str] = []
        release = threading.Event()

        def hang(path: str) -> None:
            calls.append(path)
            release.wait(60)
            finished.append(path)

        monkeypatch.setattr(filesystem, "dir_statvfs", hang)
        monkeypatch.setattr(filesystem, "STATVFS_TIMEOUT", 0.05)
        assert collector.collect(TARGETS).data == {}
        assert finished == [] and len(calls) == 2
        assert collector.cgroup_read_errors == 2  # "/" and "/data"
        collector.collect(TARGETS)
        assert len(calls) == 2 and collector.cgroup_read_errors == 2
    finally:
        release.set()
        collector.detach()
