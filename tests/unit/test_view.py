"""The exporter renders from a frozen view alone, and the generic map reader
decodes keys and values as the specs declare them."""
from __future__ import annotations

import ctypes
import dataclasses

import pytest
from prometheus_client import CollectorRegistry

from kpod_agent.collectors.base import OBSERVATIONS, Hist, MetricSpec, Snapshot
from kpod_agent.collectors.hardirqs import HardirqsCollector
from kpod_agent.collectors.syscall import SyscallCollector
from kpod_agent.config import config_from_dict
from kpod_agent.exporter import KpodCollector
from kpod_agent.pods import CgroupEntry, ContainerInfo, PodIndex, PodInfo
from kpod_agent.view import CollectionView, CollectorView


class _Key(ctypes.Structure):
    _fields_ = [("cgid", ctypes.c_uint64), ("nr", ctypes.c_uint32), ("err", ctypes.c_uint32)]


class _Hist(ctypes.Structure):
    _fields_ = [("slots", ctypes.c_uint64 * 32), ("sum", ctypes.c_uint64)]


class _Stats(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint64), ("latency", _Hist)]


def _hist(*slots: int) -> _Hist:
    h = _Hist()
    for i, n in enumerate(slots):
        h.slots[i] = n
    h.sum = 99
    return h


def test_scalar_keys_and_values() -> None:
    spec = MetricSpec("m_total", "h", "counter", map="m")
    assert spec.decode(ctypes.c_uint64(7), ctypes.c_uint64(3)) == (7, (), 3.0)
    assert spec.decode(7, 3) == (7, (), 3.0)  # batch reads give plain ints


def test_struct_keys_fields_and_decoders() -> None:
    count, errors, latency = SyscallCollector.specs
    stats = _Stats(count=5, latency=_hist(0, 2, 3))
    key = _Key(cgid=42, nr=39, err=0)
    cgid, labels, value = count.decode(key, stats)  # type: ignore[misc]
    assert (cgid, value) == (42, 5.0) and labels[0] in ("getpid", "39")
    assert latency.decode(key, stats) == (42, labels, Hist((0, 2, 3, *[0] * 29), 99.0))
    assert errors.decode(_Key(cgid=42, nr=39, err=9), ctypes.c_uint64(4)) == (42, (labels[0], "EBADF"), 4.0)


def test_node_level_keys_observations_and_empty_entries() -> None:
    latency, runs = HardirqsCollector.specs
    decoded = runs.decode(ctypes.c_uint32(11), _hist(1, 4))
    assert decoded is not None and decoded[0] == 0 and decoded[2] == 5.0
    assert runs.value == OBSERVATIONS
    empty = MetricSpec("s", "h", "histogram", labels=("vec",), per_pod=False, map="s", key=("vec",),
                       decoders={"vec": lambda n: f"v{n}"}, skip_zero=True)
    assert empty.decode(ctypes.c_uint32(3), _hist()) is None
    assert empty.decode(ctypes.c_uint32(3), _hist(0, 1))[1] == ("v3",)  # type: ignore[index]


def test_the_exporter_reads_nothing_but_the_view() -> None:
    """A bare view, no agent: known cgroups are the pod's series, unknown
    ones only in kpod_unknown_cgroup_events_total."""
    pod = PodInfo("u1", "ns", "p", {"app": "web"}, None, (ContainerInfo("app", "containerd", "c", 2),))
    entries = {1: CgroupEntry(1, "p", "ns", "p", "", "u1"), 2: CgroupEntry(2, "p/c", "ns", "p", "app", "u1")}
    index = PodIndex(entries=entries, pods={"u1": pod}, pod_paths={"u1": "p"})
    spec = MetricSpec("kpod_proc_execs_total", "execs", "counter", map="proc_events")
    snap = Snapshot()
    snap.add(spec.name, 2, 7.0)
    snap.add(spec.name, 3, 5.0)  # not in the filter: never shown
    config = config_from_dict({"discovery": {"mode": "kubelet"}, "includeLabels": ["app"],
                               "collectors": {"execsnoop": {"enabled": True}}})
    collector = CollectorView("execsnoop", (spec,), True, snap, allowed={1: 0, 2: 0}, resolved={},
                              unknown_events={spec.name: 4.0})
    view = CollectionView("node-1", config, index, {"execsnoop": {1: 0, 2: 0}}, {"execsnoop": collector})

    @dataclasses.dataclass
    class Source:
        view: CollectionView

    registry = CollectorRegistry(auto_describe=False)
    registry.register(KpodCollector(Source(view)))
    labels = {"namespace": "ns", "pod": "p", "container": "app", "node": "node-1", "label_app": "web"}
    assert registry.get_sample_value("kpod_proc_execs_total", labels) == 7.0
    execs = [s for f in registry.collect() for s in f.samples if s.name == "kpod_proc_execs_total"]
    assert len(execs) == 1
    assert registry.get_sample_value("kpod_unknown_cgroup_events_total",
                                     {"collector": "execsnoop", "metric": spec.name}) == 4.0
    assert registry.get_sample_value("kpod_container_restarts", {**labels}) == 2.0


@pytest.mark.parametrize("mode,restarts", [("kubelet", True), ("none", False)])
def test_restarts_only_with_pods(mode: str, restarts: bool) -> None:
    config = config_from_dict({"discovery": {"mode": mode}})
    view = CollectionView("node-1", config)

    @dataclasses.dataclass
    class Source:
        view: CollectionView

    names = {f.name for f in KpodCollector(Source(view)).restart_metrics()}
    assert ("kpod_container_restarts" in names) is restarts


def test_entries_of_cgroups_no_longer_counted_are_counted_once_and_forgotten() -> None:
    """With discovery: a map entry whose cgroup is not in the collector's
    filter (a pod dropped while its socket still carries traffic) goes to
    kpod_unknown_cgroup_events_total, and out of the map."""
    from kpod_agent.agent import Agent
    from kpod_agent.collectors.base import Collector
    from kpod_agent.collectors.network import NetworkCollector
    from tests.support.fake_pods import pod_index

    index = pod_index(2, containers=1)
    stray = 42

    class Net(Collector):
        name = "network"
        specs = NetworkCollector.specs
        forgotten: list[set[int]] = []

        def collect(self, targets):  # type: ignore[no-untyped-def]
            snap = Snapshot()
            for cgid in index.entries:
                snap.add("kpod_net_tcp_connections_total", cgid, 1.0)
            if not self.forgotten:  # the kernel re-creates it no more once deleted
                snap.add("kpod_net_tcp_connections_total", stray, 3.0)
                snap.add("kpod_net_tcp_rtt_seconds", stray, Hist((1, 2), 9.0))
            return snap

        def forget(self, cgroup_ids: set[int]) -> None:
            self.forgotten.append(cgroup_ids)

    class Pods:
        synced, errors_total, last_error = True, 0, None
        services: dict[str, tuple[str, str]] = {}

        def refresh(self) -> PodIndex:
            return index

        def start(self) -> None:
            pass

        def stop(self) -> None:
            pass

    agent = Agent(node_name="node-1", collector_classes={"network": Net},
                  discovery_factory=lambda config, resolver, on_change: Pods())  # type: ignore
    assert agent.apply(config_from_dict({"discovery": {"mode": "kubelet", "interval": "1h"},
                                         "collectors": {"network": {"enabled": True}}}))
    for _ in range(2):
        agent.collect_due(force=True)
    network = agent.view.collectors["network"]
    assert Net.forgotten == [{stray}]
    assert network.unknown_events == {"kpod_net_tcp_connections_total": 3.0, "kpod_net_tcp_rtt_seconds": 3.0}
    assert network.snapshot is not None
    assert {cgid for cgid, _ in network.snapshot.data["kpod_net_tcp_connections_total"]} == set(index.entries)
