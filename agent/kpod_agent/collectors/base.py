"""What every collector is: metric specs, attach/detach, filters, a snapshot.

A collector reads raw values keyed by cgroup id; the exporter turns them into
per-pod series with the pod index of the agent's latest view, so a deleted
pod's series go as soon as discovery drops it.
"""
from __future__ import annotations

import ctypes
import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from kpod_agent import cgroups, topology
from kpod_agent.config import AgentConfig
from kpod_agent.histograms import merge_slots

log = logging.getLogger(__name__)

MetricKind = Literal["counter", "gauge", "histogram"]
# (cgroup id, values of the spec's extra labels); cgroup id 0 for node-level series.
SampleKey = tuple[int, tuple[str, ...]]


@dataclass(frozen=True)
class Hist:
    slots: tuple[int, ...]
    sum: float  # in the spec's unit


def add_into(series: dict[Any, float | Hist], key: Any, value: float | Hist) -> None:
    """Sum a value into a series: counters and gauges add, histograms add
    slot by slot (several cgroups of one container, recycled cgroup ids)."""
    old = series.get(key)
    if old is None:
        series[key] = value
    elif isinstance(old, Hist) and isinstance(value, Hist):
        series[key] = Hist(tuple(merge_slots(old.slots, value.slots)), old.sum + value.sum)
    elif isinstance(old, Hist) or isinstance(value, Hist):
        raise TypeError(f"series {key!r}: a histogram and a number under one key")
    else:
        series[key] = old + value


# A label decoder: the raw key field -> the label value (ebpf_exporter's decoders).
Decoder = Callable[[int], str]
# MetricSpec.value: the number of observations of a kpod_hist value.
OBSERVATIONS = "#observations"


@dataclass(frozen=True)
class MetricSpec:
    """One exposed metric: its Prometheus name (with _total for counters),
    help, kind, the labels after namespace/pod/container/node, and for
    histograms and durations the unit of the raw values in seconds.

    A spec that names its BPF `map` is read by `BpfCollector.collect` with
    no code of the collector's own, as ebpf_exporter's config does: `key`
    names the map key's fields in order ("cgid", the cgroup id, first for
    per-pod series; a scalar key has one name), the others become `labels`
    in order, each through its decoder (`str` of the number by default);
    `value` is the value struct's field (None: the value itself, a u64 or a
    kpod_hist; OBSERVATIONS: a kpod_hist's observation count).
    `skip_zero` leaves out entries that never counted (array maps have
    every index)."""

    name: str
    help: str
    kind: MetricKind
    labels: tuple[str, ...] = ()
    unit_seconds: float = 1.0
    per_pod: bool = True
    map: str | None = None
    key: tuple[str, ...] = ("cgid",)
    value: str | None = None
    decoders: Mapping[str, Decoder] = field(default_factory=dict, hash=False)
    skip_zero: bool = False

    def decode(self, key: Any, value: Any) -> tuple[int, tuple[str, ...], float | Hist] | None:
        """(cgroup id, label values, value) of one map entry; cgroup id 0 for node-level series."""
        if len(self.key) == 1 and not hasattr(key, self.key[0]):
            fields = {self.key[0]: as_int(key)}
        else:
            fields = {name: int(getattr(key, name)) for name in self.key}
        raw = value if self.value in (None, OBSERVATIONS) else getattr(value, self.value)
        sample: float | Hist
        if self.kind == "histogram":
            sample = hist_from(raw)
        elif self.value == OBSERVATIONS:
            sample = float(sum(int(x) for x in raw.slots))
        else:
            sample = float(as_int(raw))
        if self.skip_zero and not (any(sample.slots) if isinstance(sample, Hist) else sample):
            return None
        names = [n for n in self.key if n != "cgid"]
        labels = tuple(self.decoders.get(label, str)(fields[n]) for label, n in zip(self.labels, names, strict=True))
        return fields.get("cgid", 0), labels, sample


@dataclass
class Snapshot:
    """Raw values of one read: metric name -> sample key -> value or Hist."""

    data: dict[str, dict[SampleKey, float | Hist]] = field(default_factory=dict)
    taken_at: float = 0.0
    edges: tuple[tuple[topology.EdgeKey, topology.EdgeCounts], ...] = ()
    """TCP edges of the service topology (the network collector's)."""
    edges_evicted: int = 0
    """Edges evicted from the collector's bounded store since it attached."""
    edge_requests: tuple[tuple[topology.EdgeKey, topology.EdgeRequests], ...] = ()
    """Application requests per TCP edge and protocol (the l7 collector's)."""

    def add(self, metric: str, cgid: int, value: float | Hist, labels: tuple[str, ...] = ()) -> None:
        add_into(self.data.setdefault(metric, {}), (cgid, labels), value)

    def cgroup_ids(self) -> set[int]:
        return {cgid for series in self.data.values() for cgid, _ in series}


TargetRole = Literal["pod", "container", "cgroup"]


@dataclass(frozen=True)
class CgroupTarget:
    """A cgroup the collector reads files of: its id, relative path, and
    what its series stand for: a pod's own cgroup, a container's top one,
    or (mode none) a cgroup that is its own series and is read for every
    kind of series."""

    cgroup_id: int
    relpath: str
    role: TargetRole


@dataclass
class CollectorContext:
    """What a collector needs from its host, injected so tests can point it
    at fake trees."""

    layout: cgroups.CgroupLayout
    proc_root: str = "/proc"
    bpf_dir: Path = field(default_factory=lambda: default_bpf_dir())
    max_cgroups: int = 4096
    # Set by the agent: load duration of each BPF program, by collector name.
    load_seconds: dict[str, float] = field(default_factory=dict)


class CollectorError(RuntimeError):
    """A collector that cannot run here; the message says why."""


def default_bpf_dir() -> Path:
    env = os.environ.get("KPOD_BPF_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "bpf"


class Collector(ABC):
    name: ClassVar[str]
    specs: ClassVar[tuple[MetricSpec, ...]]

    def __init__(self, ctx: CollectorContext) -> None:
        self.ctx = ctx
        self.attached = False
        self.cgroup_read_errors = 0
        # (map name -> entries, capacity, update errors), refreshed by collect()
        self.map_stats: dict[str, tuple[int, int]] = {}
        self.map_update_errors: dict[str, int] = {}
        # Cgroups the filter map had no room for: not counted until there is.
        self.refused_cgroups: set[int] = set()

    def attach(self, config: AgentConfig) -> None:
        self.attached = True

    def detach(self) -> None:
        self.attached = False

    def reconfigure(self, config: AgentConfig) -> bool:
        """Apply a new config in place; False asks the agent to re-attach."""
        return True

    def set_filter(self, allowed: Mapping[int, int] | None) -> None:  # noqa: B027 (optional hook)
        """cgroup id -> policy index of every cgroup to count; None counts all."""

    def forget(self, cgroup_ids: set[int]) -> None:  # noqa: B027 (optional hook)
        """Drop state of cgroups that are gone or no longer counted."""

    @abstractmethod
    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        """Read current values. Targets are the counted cgroups, for file reads."""


class BpfCollector(Collector):
    """A collector backed by one BCC program (one BPF() object), from
    bpf/<source>. Programs with TRACEPOINT_PROBE attach at load.

    Specs that name a map are read by `collect` alone; a collector with
    other sources adds them in its own collect()."""

    source: ClassVar[str]
    # Maps whose keys start with a u64 cgroup id: those of the per-pod
    # specs unless a collector says otherwise.
    cgroup_maps: ClassVar[tuple[str, ...]] = ()
    # Maps whose refused updates the BPF side counts (kpod_map_full(KPOD_ERR_<map>))
    # besides cgroup_maps; each gets a slot of kpod_map_errors.
    error_maps: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "cgroup_maps" not in cls.__dict__ and "specs" in cls.__dict__:
            cls.cgroup_maps = tuple(dict.fromkeys(s.map for s in cls.specs if s.map and s.per_pod))

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self.bpf: Any = None
        self._allowed: dict[int, int] = {}
        self._filter_on: bool | None = None

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        """Every spec that names a map, one pass over each map."""
        snap = Snapshot()
        by_map: dict[str, list[MetricSpec]] = {}
        for spec in self.specs:
            if spec.map is not None:
                by_map.setdefault(spec.map, []).append(spec)
        for map_name, specs in by_map.items():
            for key, value in self.read_map(map_name):
                for spec in specs:
                    sample = spec.decode(key, value)
                    if sample is not None:
                        cgid, labels, decoded = sample
                        snap.add(spec.name, cgid, decoded, labels)
        return snap

    def cflags(self, config: AgentConfig) -> list[str]:
        return [f"-DKPOD_MAX_CGROUPS={self.ctx.max_cgroups}",
                *(f"-DKPOD_ERR_{name}={slot}" for name, slot in self.error_slots().items())]

    @classmethod
    def error_slots(cls) -> dict[str, int]:
        """Map name -> its slot in the BPF-side kpod_map_errors array."""
        names = list(dict.fromkeys((*cls.cgroup_maps, *cls.error_maps)))
        if len(names) > ERR_SLOTS:
            raise CollectorError(f"{cls.__name__}: more than {ERR_SLOTS} maps count update errors")
        return {name: slot for slot, name in enumerate(names)}

    def bpf_text(self, config: AgentConfig) -> str:
        return expand_includes(self.ctx.bpf_dir, self.source)

    def attach(self, config: AgentConfig) -> None:
        from kpod_agent import bpfload

        started = time.monotonic()
        self.bpf = bpfload.load(
            text=self.bpf_text(config),
            include_dir=self.ctx.bpf_dir,
            cflags=self.cflags(config),
            what=f"{self.name} ({self.source})",
        )
        self.ctx.load_seconds[self.name] = time.monotonic() - started
        try:
            self.after_load(config)
        except Exception:
            self.detach()
            raise
        self._allowed = {}
        self._filter_on = None
        self.attached = True

    def after_load(self, config: AgentConfig) -> None:
        """Attach what TRACEPOINT_PROBE did not; fill config maps."""

    def detach(self) -> None:
        from kpod_agent import bpfload

        if self.bpf is not None:
            bpfload.unload(self.bpf)
        self.bpf = None
        self.attached = False

    def set_filter(self, allowed: Mapping[int, int] | None) -> None:
        if self.bpf is None:
            return
        want_on = allowed is not None
        if want_on != self._filter_on:
            self.bpf["count_all"][ctypes.c_int(0)] = ctypes.c_uint32(0 if want_on else 1)
            self._filter_on = want_on
        table = self.bpf["allowed_cgroups"]
        target = dict(allowed or {})
        gone = [cgid for cgid in self._allowed if cgid not in target]
        for cgid in gone:
            try:
                del table[table.Key(cgid)]
            except KeyError:
                pass
        rejected = set()
        for cgid, policy in target.items():
            if self._allowed.get(cgid) != policy:
                try:
                    table[table.Key(cgid)] = table.Leaf(policy)
                except Exception:  # full map: the cgroup stays uncounted, retried on every refresh
                    rejected.add(cgid)
        for cgid in rejected:
            del target[cgid]
        # Each refused cgroup counts once, not once per retry.
        new = rejected - self.refused_cgroups
        if new:
            self.map_update_errors["allowed_cgroups"] = self.map_update_errors.get("allowed_cgroups", 0) + len(new)
            log.warning("%s: %d cgroups did not fit in allowed_cgroups (capacity %d)",
                        self.name, len(new), table.max_entries)
        self.refused_cgroups = rejected
        self.map_stats["allowed_cgroups"] = (len(target), table.max_entries)
        self.map_update_errors.setdefault("allowed_cgroups", 0)
        self._allowed = target
        if gone:
            self.forget(set(gone))

    def forget(self, cgroup_ids: set[int]) -> None:
        if self.bpf is None or not cgroup_ids:
            return
        for map_name in self.cgroup_maps:
            table = self.bpf[map_name]
            stale = [k for k in table.keys() if _key_cgid(k) in cgroup_ids]
            delete_keys(table, stale)

    def read_map(self, map_name: str) -> list[tuple[Any, Any]]:
        """All (key, value) of a map, by batch lookup (10x faster than
        iteration for big maps), with entry counts kept for self metrics."""
        table = self.bpf[map_name]
        try:
            items = list(table.items_lookup_batch())
        except Exception:
            items = list(table.items())
        self.map_stats[map_name] = (len(items), table.max_entries)
        self._read_map_errors(map_name)
        return items

    def _read_map_errors(self, map_name: str) -> None:
        slot = self.error_slots().get(map_name)
        if slot is None:
            return
        try:
            refused = as_int(self.bpf["kpod_map_errors"][ctypes.c_int(slot)])
        except KeyError:  # a program without kpod_common.h
            return
        self.map_update_errors[map_name] = refused


class NodeBpfCollector(BpfCollector):
    """A node-level BPF collector: what it counts belongs to devices and
    serves many pods at once (interrupts, softirqs), so it has no cgroup
    filter and no per-cgroup state; its series carry only node labels."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if any(spec.per_pod for spec in cls.__dict__.get("specs", ())):
            raise TypeError(f"{cls.__name__}: a node-level collector has no per-pod specs")

    def set_filter(self, allowed: Mapping[int, int] | None) -> None:
        pass

    def forget(self, cgroup_ids: set[int]) -> None:
        pass


# Slots of kpod_map_errors (KPOD_ERR_SLOTS in kpod_common.h).
ERR_SLOTS = 16

_LOCAL_INCLUDE = re.compile(r'^#include "([\w.]+)"\s*$', re.M)


def expand_includes(bpf_dir: Path, source: str) -> str:
    """Inline our own headers: bcc rewrites map calls (`m.lookup()`) only in
    the main text, so helpers using maps must not live in an #included file."""
    text = (bpf_dir / source).read_text()
    return _LOCAL_INCLUDE.sub(lambda m: (bpf_dir / m.group(1)).read_text(), text)


def as_int(value: Any) -> int:
    """Batch reads give plain ints for scalar keys and values, item reads
    give ctypes objects: accept both."""
    return int(getattr(value, "value", value))


def _key_cgid(key: Any) -> int:
    if hasattr(key, "cgid"):
        return int(key.cgid)
    return as_int(key)


def delete_keys(table: Any, keys: list[Any]) -> None:
    if not keys:
        return
    try:
        table.items_delete_batch((type(keys[0]) * len(keys))(*keys))
    except Exception:
        for key in keys:
            try:
                del table[key]
            except KeyError:
                pass


def hist_from(value: Any) -> Hist:
    return Hist(tuple(int(x) for x in value.slots), float(value.sum))


def read_flat_keyed(path: Path) -> dict[str, int]:
    """'key value' lines (cpu.stat, memory.stat) -> ints; unknown lines skipped."""
    result: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                result[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return result


class CgroupFileCollector(Collector):
    """A collector that reads per-cgroup files of the targets it is given
    (see `view.read_targets`): pods' and containers' top cgroups, or with no
    discovery every cgroup."""

    @staticmethod
    def chosen(targets: Iterable[CgroupTarget],
               which: Literal["pods and containers", "pods", "containers"] = "pods and containers",
               ) -> list[CgroupTarget]:
        roles = {"pods and containers": ("pod", "container"), "pods": ("pod",), "containers": ("container",)}[which]
        return [t for t in targets if t.role == "cgroup" or t.role in roles]


def cgroup_pid(directory: Path, max_dirs: int = 64) -> int | None:
    """A pid of some task in the cgroup `directory` or below it (cgroup.procs
    of the cgroup2 tree), searched breadth-first; None if it has none."""
    queue = [directory]
    seen = 0
    while queue and seen < max_dirs:
        current = queue.pop(0)
        seen += 1
        try:
            with open(current / "cgroup.procs") as fh:
                for line in fh:
                    line = line.strip()
                    if line.isdigit():
                        return int(line)
            with os.scandir(current) as it:
                queue.extend(Path(e.path) for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return None
