"""The collector catalogue against this kernel: each collector sees a known
workload in the pod that ran it, and nothing of it in the neighbour pod."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kpod_agent.agent import Agent
from kpod_agent.collectors.base import CollectorContext
from kpod_agent.collectors.execsnoop import ExecsnoopCollector
from kpod_agent.collectors.hardirqs import irq_name
from tests.support.kernel_node import FakePod, KernelNode
from tests.support.scraper import Scraper
from tests.support.waiting import wait_for

N = 101  # a prime: background activity does not make exactly this many events
MB = 1 << 20
CATALOGUE = ("tcpdrop", "biolatency", "cachestat", "hardirqs", "softirqs", "execsnoop",
             "diskIO", "ifaceNetwork", "filesystem", "memoryCgroup")


@pytest.fixture(scope="module")
def pods(node: KernelNode) -> dict[str, FakePod]:
    return {"a": node.add_pod("cat-a", "team-a"), "b": node.add_pod("cat-b", "team-b")}


@pytest.fixture(scope="module")
def scraper(node: KernelNode, pods: dict[str, FakePod]) -> Iterator[Scraper]:
    agent = Agent(node_name="node-1")
    assert agent.apply(node.config(collectors={name: {"enabled": True} for name in CATALOGUE}))
    failed = {n: s.error for n, s in agent.states.items() if s.collector is None}
    assert not failed, f"collectors failed to attach: {failed}"
    scraper = Scraper(agent)
    scraper.sync()
    yield scraper
    agent.shutdown()


def deltas(scraper: Scraper, pods: dict[str, FakePod], names: tuple[str, ...], action: Callable[[], object],
           **labels: str) -> dict[tuple[str, str], float]:
    """Run `action`, return (pod key, metric) -> change of the app container's series."""
    before = {(p, n): scraper.pod_value(n, pods[p], **labels) for p in pods for n in names}
    action()
    scraper.sync()
    return {(p, n): scraper.pod_value(n, pods[p], **labels) - before[(p, n)] for p in pods for n in names}


# ---- execsnoop ------------------------------------------------------------

PROC = ("kpod_proc_forks_total", "kpod_proc_execs_total", "kpod_proc_exits_total")


def test_forks_counted_exactly(scraper: Scraper, pods: dict[str, FakePod]) -> None:
    d = deltas(scraper, pods, PROC, lambda: pods["a"].workload("fork", N))
    # the workload's own exec and exit happen in the pod too; its fork does not
    assert d[("a", "kpod_proc_forks_total")] == N
    assert d[("a", "kpod_proc_execs_total")] == 1
    assert d[("a", "kpod_proc_exits_total")] == N + 1
    assert all(d[("b", n)] == 0 for n in PROC)


def test_execs_counted_exactly(scraper: Scraper, pods: dict[str, FakePod]) -> None:
    d = deltas(scraper, pods, PROC, lambda: pods["b"].workload("exec", N))
    assert d[("b", "kpod_proc_forks_total")] == N
    assert d[("b", "kpod_proc_execs_total")] == N + 1
    assert d[("b", "kpod_proc_exits_total")] == N + 1
    assert all(d[("a", n)] == 0 for n in PROC)


def test_threads_are_not_forks(scraper: Scraper, pods: dict[str, FakePod]) -> None:
    python = sys.executable  # not a wrapper script that forks (pyenv shims do)
    code = "import threading\nfor _ in range(20):\n t = threading.Thread(target=int); t.start(); t.join()"
    d = deltas(scraper, pods, PROC, lambda: pods["a"].run([python, "-S", "-c", code]).check_returncode())
    assert d[("a", "kpod_proc_forks_total")] == 0
    assert d[("a", "kpod_proc_exits_total")] == 1


def test_exits_without_group_dead_field(node: KernelNode, pods: dict[str, FakePod],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The variant for kernels before 6.16 (no group_dead): the leader's exit
    counts, once per process however many threads ran."""
    from kpod_agent.collectors import execsnoop

    monkeypatch.setattr(execsnoop, "exit_has_group_dead", lambda *a: False)
    collector = ExecsnoopCollector(CollectorContext(layout=node.layout))
    collector.attach(node.config(collectors={"execsnoop": {"enabled": True}}))
    try:
        a = pods["a"]
        collector.set_filter({a.cgroup_id(): 0})
        a.workload("fork", 5)
        code = "import threading\nfor _ in range(5):\n t = threading.Thread(target=int); t.start(); t.join()"
        a.run([sys.executable, "-S", "-c", code]).check_returncode()
        snap = collector.collect([])
        key = (a.cgroup_id(), ())
        assert snap.data["kpod_proc_forks_total"][key] == 5
        assert snap.data["kpod_proc_exits_total"][key] == 5 + 1 + 1
    finally:
        collector.detach()


# ---- tcpdrop --------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connections_are_drops_of_the_connecting_pod(scraper: Scraper, pods: dict[str, FakePod]) -> None:
    names = ("kpod_net_tcp_drops_total",)
    d = deltas(scraper, pods, names, lambda: pods["a"].workload("refused", "127.0.0.1", _closed_port(), N))
    assert d[("a", "kpod_net_tcp_drops_total")] == N
    assert d[("b", "kpod_net_tcp_drops_total")] == 0


DUAL_STACK_CONNECTS = """
import errno, socket, sys
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_INET6)
    assert s.connect_ex((sys.argv[3], int(sys.argv[1]))) == errno.ECONNREFUSED
    s.close()
"""


@pytest.mark.parametrize("host", ["::ffff:127.0.0.1", "::1"])
def test_refused_connections_of_ipv6_sockets(scraper: Scraper, pods: dict[str, FakePod], host: str) -> None:
    """IPv6 sockets, to an IPv4-mapped address (IPv4 SYNs: dual-stack
    servers and JVMs connect this way) and over IPv6."""
    if not socket.has_ipv6 or not Path("/proc/net/if_inet6").exists():
        pytest.skip("IPv6 is off on this host")
    names = ("kpod_net_tcp_drops_total",)
    count = 13
    def connect() -> None:
        result = pods["b"].run([sys.executable, "-S", "-c", DUAL_STACK_CONNECTS, str(_closed_port()), str(count), host])
        assert result.returncode == 0, result.stderr.decode()

    d = deltas(scraper, pods, names, connect)
    assert d[("b", "kpod_net_tcp_drops_total")] == count
    assert d[("a", "kpod_net_tcp_drops_total")] == 0


LISTENER = """
import ctypes, socket, struct, sys
# classic BPF "ret #0": the socket takes no packet, the kernel drops them (SOCKET_FILTER)
code = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", 1, ctypes.addressof(code)))  # SO_ATTACH_FILTER
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_packets_dropped_at_a_listener_charged_to_its_pod(scraper: Scraper, pods: dict[str, FakePod]) -> None:
    """SYNs to a listener whose socket filter refuses them die with the
    listener as rx_sk: drops of the listening pod, not of the connecting one."""
    b = pods["b"]
    listener = b.spawn([sys.executable, "-S", "-c", LISTENER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    clients = []
    try:
        assert listener.stdout is not None
        port = int(listener.stdout.readline())
        before = {p: scraper.pod_value("kpod_net_tcp_drops_total", pods[p]) for p in pods}
        count = 7
        started = time.monotonic()
        for _ in range(count):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            clients.append(c)
        scraper.sync()
        elapsed = time.monotonic() - started
        dropped = scraper.pod_value("kpod_net_tcp_drops_total", b) - before["b"]
        if elapsed < 0.9:  # before the first SYN retransmission (1 s)
            assert dropped == count
        else:
            assert count <= dropped <= 3 * count
        assert scraper.pod_value("kpod_net_tcp_drops_total", pods["a"]) == before["a"]
    finally:
        for c in clients:
            c.close()
        listener.communicate(timeout=10)


# ---- disk: diskIO, biolatency, cachestat -----------------------------------

def _majmin(path: Path) -> str:
    dev = os.stat(path).st_dev
    return f"{os.major(dev)}:{os.minor(dev)}"


def _whole_disk(majmin: str) -> str:
    sysdir = Path("/sys/dev/block", majmin).resolve()
    if (sysdir / "partition").exists():
        return (sysdir.parent / "dev").read_text().strip()
    return majmin


def _devname(majmin: str) -> str:
    for line in Path("/sys/dev/block", majmin, "uevent").read_text().splitlines():
        if line.startswith("DEVNAME="):
            return line.split("=", 1)[1]
    return majmin


@pytest.fixture(scope="module")
def disk(node: KernelNode, pods: dict[str, FakePod], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A directory on a real block device, and that device's name. On v1 the
    throttle statistics only move once the device has some rule: a no-limit one."""
    directory = tmp_path_factory.mktemp("disk")
    majmin = _whole_disk(_majmin(directory))
    if not Path("/sys/dev/block", majmin).exists():
        pytest.skip(f"{directory} is not on a block device")
    if "blkio" in node.layout.v1:
        for pod in pods.values():
            rule = node.layout.controller_dir(pod.relpaths["app"], "blkio") / "blkio.throttle.write_bps_device"
            rule.write_text(f"{majmin} 0")
    return directory, _devname(majmin)


def test_fsynced_write_in_disk_io_and_biolatency(scraper: Scraper, pods: dict[str, FakePod],
                                                 disk: tuple[Path, str]) -> None:
    directory, device = disk
    size_mb = 16
    names = ("kpod_disk_written_bytes_total", "kpod_disk_writes_total")
    lat = "kpod_disk_io_latency_seconds_count"
    lat_before = {p: scraper.pod_value(lat, pods[p]) for p in pods}
    d = deltas(scraper, pods, names, lambda: pods["a"].workload("write", directory / "a.bin", size_mb, 1),
               device=device)
    # the data, plus a little metadata the writer itself submits
    assert size_mb * MB <= d[("a", "kpod_disk_written_bytes_total")] <= (size_mb + 1) * MB
    assert d[("a", "kpod_disk_writes_total")] >= 1
    assert d[("b", "kpod_disk_written_bytes_total")] == 0
    # the pod-level series covers its containers
    assert scraper.pod_value("kpod_disk_written_bytes_total", pods["a"], container="", device=device) >= size_mb * MB
    # at least one request, at most one per 4 KiB block written
    assert 1 <= scraper.pod_value(lat, pods["a"]) - lat_before["a"] <= (size_mb + 1) * MB // 4096
    assert scraper.pod_value(lat, pods["b"]) == lat_before["b"]
    assert scraper.pod_value("kpod_disk_io_latency_seconds_sum", pods["a"]) > 0


CACHE = ("kpod_mem_cache_additions_total", "kpod_mem_cache_dirtied_total", "kpod_mem_cache_accesses_total")


def test_page_cache_writes_and_reads(scraper: Scraper, pods: dict[str, FakePod], disk: tuple[Path, str]) -> None:
    directory, _ = disk
    size_mb = 8
    pages = size_mb * MB // 4096
    path = directory / "cache.bin"
    d = deltas(scraper, pods, CACHE, lambda: pods["b"].workload("write", path, size_mb, 1))
    # every new page once, give or take a page of the workload's own files
    assert pages <= d[("b", "kpod_mem_cache_additions_total")] <= pages + 16
    # folios, not pages: large folios make fewer events (16-page ones on ext4 here)
    assert 1 <= d[("b", "kpod_mem_cache_dirtied_total")] <= pages
    assert all(d[("a", n)] == 0 for n in CACHE)
    # read back after dropping it from the cache: every page is asked for and
    # added again; the extra accesses are the workload binary's file faults.
    # Written back first, so the inode's block is clean: a read that touched
    # atime would dirty it again (the workload opens with O_NOATIME).
    os.sync()
    d = deltas(scraper, pods, CACHE, lambda: pods["b"].workload("read", path))
    assert pages <= d[("b", "kpod_mem_cache_accesses_total")] <= pages + 64
    assert pages <= d[("b", "kpod_mem_cache_additions_total")] <= pages + 16
    assert d[("b", "kpod_mem_cache_dirtied_total")] == 0
    assert all(d[("a", n)] == 0 for n in CACHE)


# ---- memoryCgroup ----------------------------------------------------------

def test_memory_cgroup_usage_and_peak(scraper: Scraper, pods: dict[str, FakePod]) -> None:
    a, b = pods["a"], pods["b"]
    size_mb = 64
    holder = a.spawn([str(a.node.workload), "hold", str(size_mb)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        scraper.sync()
        assert scraper.pod_value("kpod_mem_cgroup_usage_bytes", a) >= size_mb * MB
        assert scraper.pod_value("kpod_mem_cgroup_usage_bytes", a, container="") >= size_mb * MB
        assert scraper.pod_value("kpod_mem_cgroup_usage_bytes", b) < size_mb * MB
    finally:
        holder.communicate(timeout=10)
    scraper.sync()
    assert scraper.pod_value("kpod_mem_cgroup_usage_bytes", a) < size_mb * MB
    assert scraper.pod_value("kpod_mem_cgroup_peak_bytes", a) >= size_mb * MB
    assert scraper.pod_value("kpod_mem_cgroup_peak_bytes", b) < size_mb * MB
    assert [s for s in scraper.series("kpod_mem_cgroup_swap_bytes") if s["pod"] == a.name]
    assert [s for s in scraper.series("kpod_mem_cgroup_cache_bytes") if s["pod"] == a.name]


# ---- ifaceNetwork ----------------------------------------------------------

def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns(pods: dict[str, FakePod]) -> Iterator[tuple[str, str]]:
    """A network namespace joined by a veth pair (host 10.213.x.1 <-> ns .2),
    IPv6 off so no neighbour discovery adds packets."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is needed")
    tag = f"{os.getpid() % 10000}"
    name, host_if, ns_if = f"kpodcat{tag}", f"kch{tag}", f"kcn{tag}"
    octet = os.getpid() % 250 + 1
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", name)
        for sysctl in (f"net.ipv6.conf.{host_if}.disable_ipv6=1",):
            subprocess.run(["sysctl", "-qw", sysctl], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                       check=False, capture_output=True)
        _ip("addr", "add", f"10.213.{octet}.1/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "addr", "add", f"10.213.{octet}.2/30", "dev", ns_if)
        _ip("-n", name, "link", "set", ns_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield name, ns_if
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_interface_counters_of_pod_netns(scraper: Scraper, pods: dict[str, FakePod],
                                         netns: tuple[str, str]) -> None:
    a, b = pods["a"], pods["b"]
    name, ns_if = netns
    inside = a.spawn(["ip", "netns", "exec", name, "sleep", "60"])
    outside = b.spawn(["sleep", "60"])  # host network namespace: not the pod's own
    try:
        octet = os.getpid() % 250 + 1
        # wait for the task to be in the namespace
        def seen() -> bool:
            scraper.sync()
            return any(s["pod"] == a.name for s in scraper.series("kpod_net_iface_rx_packets_total"))
        wait_for(seen, "the pod's interface", timeout=5, interval=0.1)
        names = ("kpod_net_iface_rx_packets_total", "kpod_net_iface_rx_bytes_total")
        before = {n: scraper.pod_value(n, a, container="", interface=ns_if) for n in names}
        payload = b"k" * 500
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(N):
                s.sendto(payload, (f"10.213.{octet}.2", 9))
        time.sleep(0.2)
        scraper.sync()
        rx_packets = scraper.pod_value(names[0], a, container="", interface=ns_if) - before[names[0]]
        rx_bytes = scraper.pod_value(names[1], a, container="", interface=ns_if) - before[names[1]]
        # N datagrams, plus at most an ARP exchange
        assert N <= rx_packets <= N + 3
        assert rx_bytes >= N * len(payload)
        ifaces = {s["interface"] for s in scraper.series("kpod_net_iface_rx_packets_total") if s["pod"] == a.name}
        assert "lo" not in ifaces
        assert not [s for s in scraper.series("kpod_net_iface_rx_packets_total") if s["pod"] == b.name]
        # one series set per pod: on the pod-level cgroup, not per container
        assert {s["container"] for s in scraper.series("kpod_net_iface_tx_bytes_total")
                if s["pod"] == a.name} == {""}
    finally:
        inside.kill()
        outside.kill()
        inside.wait()
        outside.wait()


# ---- filesystem ------------------------------------------------------------

def test_writable_mounts_of_container(scraper: Scraper, pods: dict[str, FakePod], tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("util-linux unshare is needed")
    a = pods["a"]
    src, rw, ro, tmpfs, single = (tmp_path / n for n in ("src", "rw", "ro", "tmpfs", "file"))
    for d in (src, rw, ro, tmpfs):
        d.mkdir()
    single.write_text("x")
    (src / "f").write_text("y")
    script = (f"mount --bind {src} {rw} && mount --bind {src} {ro} && mount -o remount,bind,ro {ro} && "
              f"mount -t tmpfs kpodtmp {tmpfs} && mount --bind {src}/f {single} && echo ready && exec sleep 60")
    proc = a.spawn(["unshare", "-m", "--propagation", "private", "sh", "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        scraper.sync()
        st = os.statvfs(src)
        assert scraper.pod_value("kpod_fs_capacity_bytes", a, mountpoint=str(rw)) == st.f_blocks * st.f_frsize
        usage = scraper.pod_value("kpod_fs_usage_bytes", a, mountpoint=str(rw))
        assert abs(usage - (st.f_blocks - st.f_bfree) * st.f_frsize) < 256 * MB  # the disk is in use meanwhile
        assert scraper.pod_value("kpod_fs_available_bytes", a, mountpoint=str(rw)) > 0
        mounts = {s["mountpoint"] for s in scraper.series("kpod_fs_capacity_bytes") if s["pod"] == a.name}
        assert str(ro) not in mounts and str(tmpfs) not in mounts and str(single) not in mounts
        assert "/proc" not in mounts and "/sys" not in mounts
        assert {s["container"] for s in scraper.series("kpod_fs_capacity_bytes") if s["pod"] == a.name} == {"app"}
        # a pod whose tasks share the host's mount namespace has no series
        assert not [s for s in scraper.series("kpod_fs_capacity_bytes") if s["pod"] == pods["b"].name]
    finally:
        proc.kill()
        proc.communicate()


# ---- hardirqs and softirqs: node-level, checked against the kernel's own counts

def _proc_interrupts() -> dict[int, int]:
    out = {}
    for line in Path("/proc/interrupts").read_text().splitlines()[1:]:
        head, _, rest = line.partition(":")
        if head.strip().isdigit():
            counts = [int(x) for x in rest.split()[:os.cpu_count() or 1] if x.isdigit()]
            out[int(head)] = sum(counts)
    return out


def _proc_softirqs() -> dict[str, int]:
    out = {}
    for line in Path("/proc/softirqs").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        out[name.strip().lower()] = sum(int(x) for x in rest.split())
    return out


def test_irq_counts_between_kernel_counts(scraper: Scraper, pods: dict[str, FakePod],
                                          disk: tuple[Path, str]) -> None:
    """Ours, read between two scrapes, lie between the kernel's counts read
    just inside and just outside those scrapes."""
    # IRQs with one handler each, as /proc/interrupts counts one per interrupt
    numbers = {n: irq_name(n) for n in _proc_interrupts()}
    single = {n: name for n, name in numbers.items()
              if "," not in name and list(numbers.values()).count(name) == 1}
    p0, s0 = _proc_interrupts(), _proc_softirqs()
    scraper.sync()
    p1, s1 = _proc_interrupts(), _proc_softirqs()
    ours1 = {n: scraper.value("kpod_irq_hw_count_total", irq=name) for n, name in single.items()}
    soft1 = {v: scraper.value("kpod_irq_sw_latency_seconds_count", vec=v) for v in s0}
    pods["a"].workload("write", disk[0] / "irq.bin", 4, 1)
    p2, s2 = _proc_interrupts(), _proc_softirqs()
    scraper.sync()
    p3, s3 = _proc_interrupts(), _proc_softirqs()
    moved = 0
    for n, name in single.items():
        ours = scraper.value("kpod_irq_hw_count_total", irq=name) - ours1[n]
        assert p2[n] - p1[n] - 2 <= ours <= p3[n] - p0[n], (name, p0[n], p1[n], p2[n], p3[n], ours)
        moved += ours > 0
    assert moved >= 1
    for v in s0:
        ours = scraper.value("kpod_irq_sw_latency_seconds_count", vec=v) - soft1[v]
        assert s2[v] - s1[v] - 2 <= ours <= s3[v] - s0[v], (v, s0[v], s1[v], s2[v], s3[v], ours)
    assert scraper.value("kpod_irq_sw_latency_seconds_count", vec="timer") > 0
    # node-level: no pod labels
    assert all(set(s) == {"node", "irq"} for s in scraper.series("kpod_irq_hw_count_total"))


def test_deleted_pod_leaves_no_series_nor_map_entries(scraper: Scraper, node: KernelNode,
                                                      disk: tuple[Path, str]) -> None:
    gone = node.add_pod("cat-gone", "team-a")
    scraper.sync()
    gone.workload("exec", 2)
    gone.workload("write", disk[0] / "gone.bin", 1, 1)
    scraper.sync()
    assert scraper.pod_value("kpod_proc_execs_total", gone) == 4  # 2 + each workload's own exec
    assert scraper.pod_value("kpod_mem_cgroup_peak_bytes", gone) > 0
    cgid = gone.cgroup_id()
    node.remove_pod(gone)
    scraper.sync()
    for family in ("kpod_proc_execs_total", "kpod_mem_cache_additions_total", "kpod_disk_written_bytes_total",
                   "kpod_mem_cgroup_usage_bytes", "kpod_disk_io_latency_seconds_count"):
        assert not [s for s in scraper.series(family) if s.get("pod") == "cat-gone"], family
    for name, map_name in (("execsnoop", "proc_events"), ("cachestat", "cache_stats")):
        table = scraper.agent.states[name].collector.bpf[map_name]  # type: ignore[union-attr]
        assert not [k for k in table.keys() if k.value == cgid], name


# ---- map health ------------------------------------------------------------

def test_full_map_counted_not_fatal(node: KernelNode, pods: dict[str, FakePod]) -> None:
    """A 2-entry map, every cgroup counted, three pods forking: at least one
    pod's events are refused and counted as update errors; once entries are
    forgotten the program counts again."""
    ctx = CollectorContext(layout=node.layout, max_cgroups=2)
    collector = ExecsnoopCollector(ctx)
    collector.attach(node.config(collectors={"execsnoop": {"enabled": True}}))
    third = node.add_pod("cat-c", "team-c")
    try:
        collector.set_filter(None)
        for pod in (pods["a"], pods["b"], third):
            pod.workload("fork", 3)
        snap = collector.collect([])
        assert len(snap.data["kpod_proc_forks_total"]) == 2
        assert collector.map_stats["proc_events"] == (2, 2)
        # a refused pod loses 3 forks, 1 exec and 4 exits
        assert collector.map_update_errors["proc_events"] >= 8
        # other cgroups of this busy host race for the freed entries: retry
        for _ in range(10):
            collector.forget(snap.cgroup_ids())
            third.workload("fork", 3)
            snap = collector.collect([])
            if snap.data["kpod_proc_forks_total"].get((third.cgroup_id(), ())) == 3:
                break
        else:
            pytest.fail("no fork counted after the map was emptied")
    finally:
        collector.detach()
        node.remove_pod(third)


# ---- the whole catalogue in one scrape ---------------------------------------

CONTRACT_FAMILIES = re.findall(r"`(kpod_[a-z_{},]+)`", """
`kpod_cpu_runqueue_latency_seconds` `kpod_cpu_context_switches_total` `kpod_cpu_throttled_seconds_total`
`kpod_cpu_throttled_periods_total` `kpod_net_tcp_bytes_sent_total` `kpod_net_tcp_bytes_received_total`
`kpod_net_tcp_retransmits_total` `kpod_net_tcp_connections_total` `kpod_net_tcp_rtt_seconds`
`kpod_net_tcp_connection_latency_seconds` `kpod_mem_oom_kills_total` `kpod_mem_major_page_faults_total`
`kpod_mem_rss_bytes` `kpod_mem_working_set_bytes` `kpod_mem_cache_bytes` `kpod_syscall_count_total`
`kpod_syscall_errors_total` `kpod_syscall_latency_seconds` `kpod_net_tcp_drops_total`
`kpod_disk_io_latency_seconds` `kpod_mem_cache_accesses_total` `kpod_mem_cache_additions_total`
`kpod_mem_cache_dirtied_total` `kpod_mem_cache_buf_dirtied_total` `kpod_irq_hw_latency_seconds`
`kpod_irq_hw_count_total` `kpod_irq_sw_latency_seconds` `kpod_proc_execs_total` `kpod_proc_forks_total`
`kpod_proc_exits_total` `kpod_disk_read_bytes_total` `kpod_disk_written_bytes_total` `kpod_disk_reads_total`
`kpod_disk_writes_total` `kpod_net_iface_rx_bytes_total` `kpod_net_iface_rx_packets_total`
`kpod_net_iface_rx_errors_total` `kpod_net_iface_rx_drops_total` `kpod_net_iface_tx_bytes_total`
`kpod_net_iface_tx_packets_total` `kpod_net_iface_tx_errors_total` `kpod_net_iface_tx_drops_total`
`kpod_fs_capacity_bytes` `kpod_fs_usage_bytes` `kpod_fs_available_bytes` `kpod_mem_cgroup_usage_bytes`
`kpod_mem_cgroup_peak_bytes` `kpod_mem_cgroup_cache_bytes` `kpod_mem_cgroup_swap_bytes`
`kpod_container_restarts` `kpod_bpf_map_update_errors_total`
""")


def test_comprehensive_scrape_passes_promtool(node: KernelNode, pods: dict[str, FakePod],
                                              disk: tuple[Path, str]) -> None:
    from prometheus_client import generate_latest

    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus (scripts/setup.sh --test does it)"
    agent = Agent(node_name="node-1")
    try:
        assert agent.apply(node.config(profile="comprehensive"))
        failed = {n: s.error for n, s in agent.states.items() if s.collector is None}
        assert not failed, f"collectors failed to attach: {failed}"
        assert set(agent.attached()) >= set(CATALOGUE)
        scraper = Scraper(agent)
        scraper.sync()
        pods["a"].workload("exec", 3)
        pods["a"].workload("write", disk[0] / "promtool.bin", 1, 1)
        scraper.sync()
        text = generate_latest(scraper.registry)
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        exposed = set(re.findall(r"^# TYPE (\w+) ", text.decode(), re.M))
        exposed |= {n + "_total" for n in exposed}
        missing = [f for f in CONTRACT_FAMILIES if f not in exposed]
        assert not missing, f"contract families missing from a comprehensive scrape: {missing}"
    finally:
        agent.shutdown()
