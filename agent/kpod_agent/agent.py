"""The agent's runtime: applies node configs to collectors, keeps their filter
maps in step with discovery, and reads them on their own intervals.

Threads: the config source calls `submit`, discovery calls `on_index`, the
collection loop calls `collect_due`; each publishes a new frozen `view`
(see view.py), which is all HTTP scrapes read. Every call into a bcc object
happens under `kernel_lock` (bcc is not thread-safe); scrapes never take it,
so a slow detach never stalls /metrics.
"""
from __future__ import annotations

import ctypes
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from kpod_agent import bpfload, cgroups, filters, reload, view
from kpod_agent.collectors import REGISTRY
from kpod_agent.collectors.base import CgroupTarget, Collector, CollectorContext, Snapshot, TargetRole
from kpod_agent.config import AgentConfig, ConfigError, OtlpConfig, parse_config
from kpod_agent.contract import AgentStatus, CollectorStatus, DiscoveryStatus, MapFull
from kpod_agent.discovery import Discovery
from kpod_agent.pods import CgroupEntry, PodIndex

log = logging.getLogger(__name__)


class Pusher(Protocol):
    """A background pusher of the series (otlp.py): started once, stopped once."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class CollectorState:
    collector: Collector | None = None
    error: str | None = None
    next_due: float = 0.0
    duration: float = 0.0
    errors_total: int = 0
    skipped_total: int = 0
    # Cgroups of the last reading that the index lacked, found then (mode none).
    resolved: dict[int, CgroupEntry] = field(default_factory=dict)
    # metric -> what BPF counted for cgroup ids that are no counted pod's.
    unknown_events: dict[str, float] = field(default_factory=dict)
    # Wall clock of the last attach: its counters started from zero then.
    attached_ns: int = 0


@dataclass
class ReloadStats:
    success: int = 0
    error: int = 0
    last_error: str | None = None
    last_error_time: str | None = None
    applied_at: str | None = None


@dataclass
class Agent:
    node_name: str
    collector_classes: dict[str, type[Collector]] = field(default_factory=lambda: dict(REGISTRY))
    # Made from the applied config: a test passes one pointing at a fake API.
    discovery_factory: (
        Callable[[AgentConfig, cgroups.CgroupResolver, Callable[[PodIndex], None]], Discovery] | None
    ) = None
    # Capacity of every per-cgroup BPF map, over the config's maxCgroups;
    # small in tests that fill them.
    max_cgroups: int | None = None
    # Made from the applied config's `otlp` when it is on: the OTLP pusher
    # (started here, stopped on the next change of `otlp`).
    pusher_factory: Callable[[OtlpConfig], Pusher] | None = None

    def __post_init__(self) -> None:
        self.kernel_lock = threading.RLock()
        self.config: AgentConfig | None = None
        self.states: dict[str, CollectorState] = {}
        self.snapshots: dict[str, Snapshot] = {}
        self.index: PodIndex = view.EMPTY_INDEX
        self._tops: dict[str, TargetRole] = {}
        self.filters: dict[str, dict[int, int] | None] = {}
        self.reloads = ReloadStats()
        self.discovery: Discovery | None = None
        # Errors of discovery instances replaced by config changes: the
        # exposed counter must never go down.
        self._past_discovery_errors = 0
        self.resolver: cgroups.CgroupResolver | None = None
        self.ctx: CollectorContext | None = None
        self.cycle_duration = 0.0
        self.started = time.monotonic()
        self._apply_lock = threading.Lock()
        self.on_applied: list[Callable[[AgentStatus], None]] = []
        # collector -> pods (namespace/name) it cannot count: its filter map is full
        self.uncounted: dict[str, set[str]] = {}
        self._view = view.CollectionView(node_name=self.node_name)
        self._view_lock = threading.Lock()
        self.pusher: Pusher | None = None
        # result -> OTLP pushes, over every pusher since start (never goes down).
        self.otlp_exports: dict[str, int] = {"success": 0, "error": 0}

    # ---- config -------------------------------------------------------

    def submit(self, text: str | bytes, source: str) -> bool:
        """Parse and apply a config document; a bad one keeps the last good."""
        try:
            config = parse_config(text)
        except ConfigError as exc:
            self.reject(f"{source}: {exc}")
            return False
        return self.apply(config, source)

    def reject(self, message: str) -> None:
        self.reloads.error += 1
        self.reloads.last_error = message
        self.reloads.last_error_time = _now()
        self._publish()
        log.error("config rejected, keeping generation %s: %s",
                  self.config.generation if self.config else "none", message)

    def apply(self, config: AgentConfig, source: str = "api") -> bool:
        with self._apply_lock:
            old = self.config
            try:
                filters.syscall_policies(config)
                layout_changed = (old is None or old.cgroupRoot != config.cgroupRoot
                                  or old.discovery.kubepodsRoots != config.discovery.kubepodsRoots)
                if layout_changed:
                    layout = cgroups.detect_layout(config.cgroupRoot)
            except (ValueError, cgroups.CgroupError) as exc:
                self.reject(f"{source}: {exc}")
                return False
            started = time.monotonic()
            if layout_changed:
                self.resolver = cgroups.CgroupResolver(layout, kubepods_roots=config.discovery.kubepodsRoots)
                if self.ctx is None:
                    self.ctx = CollectorContext(layout=layout, proc_root=config.procRoot)
                else:
                    self.ctx.layout = layout
            assert self.ctx is not None and self.resolver is not None
            self.ctx.proc_root = config.procRoot
            self.ctx.max_cgroups = self.max_cgroups or config.maxCgroups
            plan = reload.plan_reload(old, config)
            # Collectors that failed to attach are kept ones whose inputs may
            # not have changed: every new config is still a new chance.
            planned = {*plan.detach, *plan.attach, *plan.reconfigure}
            retry = sorted(n for n, s in self.states.items() if s.collector is None and n not in planned)
            with self.kernel_lock:
                for name in plan.detach:
                    self._detach(name)
                for name in (*plan.reconfigure, *retry):
                    self._reconfigure(name, config)
                for name in plan.attach:
                    self._attach(name, config)
                # Published only once applied: /config then reports a
                # generation whose probes are all in place.
                self.config = config
                # Filters before the lock goes: a collection never sees a new
                # collector that counts nothing yet.
                self._refresh_filters()
            if layout_changed or plan.restart_discovery:
                self._restart_discovery(config)  # refreshes the filters with its first view
            if plan.restart_otlp:
                self._restart_pusher(config.otlp)
            self.reloads.success += 1
            self.reloads.applied_at = _now()
            self._publish()
            log.info("applied config generation %d from %s in %.0f ms (attached: %s; failed: %s)",
                     config.generation, source, (time.monotonic() - started) * 1000,
                     ", ".join(self.attached()) or "none",
                     ", ".join(f"{n} ({s.error})" for n, s in self.states.items() if s.error) or "none")
        status = self.status()
        for callback in self.on_applied:
            try:
                callback(status)
            except Exception:  # a status sink must never break reloads
                log.exception("status callback failed")
        return True

    def _attach(self, name: str, config: AgentConfig) -> None:
        assert self.ctx is not None
        state = self.states.setdefault(name, CollectorState())
        cls = self.collector_classes.get(name)
        if cls is None:
            state.error = "not available in this agent build"
            return
        collector = cls(self.ctx)
        ctypes.set_errno(0)
        try:
            collector.attach(config)
        except Exception as exc:  # a probe that fails degrades its collector only
            state.collector = None
            state.error = bpfload.describe(exc)
            state.errors_total += 1
            log.error("collector %s not attached: %s", name, state.error)
            return
        state.collector = collector
        state.error = None
        state.next_due = 0.0
        state.attached_ns = time.time_ns()
        log.info("collector %s attached (%.0f ms)", name, self.ctx.load_seconds.get(name, 0.0) * 1000)

    def _detach(self, name: str) -> None:
        state = self.states.pop(name, None)
        self.snapshots.pop(name, None)
        if state and state.collector is not None:
            state.collector.detach()
            log.info("collector %s detached", name)

    def _reconfigure(self, name: str, config: AgentConfig) -> None:
        state = self.states.get(name)
        if state is None or state.collector is None:
            # Failed before: a new config is a new chance (its error count goes on).
            self._attach(name, config)
            return
        try:
            if state.collector.reconfigure(config):
                state.error = None
                return
        except Exception as exc:
            log.warning("collector %s could not take the new config in place (%s): re-attaching", name, exc)
        self._detach(name)
        self._attach(name, config)

    def attached(self) -> list[str]:
        return [n for n, s in self.states.items() if s.collector is not None]

    # ---- discovery and filters ----------------------------------------

    def _restart_discovery(self, config: AgentConfig) -> None:
        if self.discovery is not None:
            self.discovery.stop()
            self._past_discovery_errors += self.discovery.errors_total
        assert self.resolver is not None
        if self.discovery_factory is not None:
            self.discovery = self.discovery_factory(config, self.resolver, self.on_index)
        else:
            self.discovery = Discovery(config.discovery, self.node_name, self.resolver, on_change=self.on_index)
        try:
            self.on_index(self.discovery.refresh())
        except Exception as exc:  # the thread retries; first view stays empty
            log.warning("first discovery failed: %s", exc)
        self.discovery.start()

    # ---- OTLP push --------------------------------------------------------

    def _restart_pusher(self, otlp: OtlpConfig) -> None:
        if self.pusher is not None:
            self.pusher.stop()
            self.pusher = None
        if otlp.enabled and self.pusher_factory is not None:
            self.pusher = self.pusher_factory(otlp)
            self.pusher.start()
            log.info("OTLP push to %s every %.3gs", otlp.url(), otlp.interval)

    def count_export(self, result: str) -> None:
        """One OTLP push done (success / error); called from the pusher's thread."""
        with self._view_lock:
            self.otlp_exports[result] = self.otlp_exports.get(result, 0) + 1

    def on_index(self, index: PodIndex) -> None:
        self._refresh_filters(index)

    def _refresh_filters(self, index: PodIndex | None = None) -> None:
        """Pod index and filters change together: a reading never sees
        cgroups of a pod list that its filters do not belong to."""
        index = self.index if index is None else index
        tops = self._tops if index is self.index and self._tops else view.top_cgroups(index)
        config = self.config
        new_filters = filters.compute_filters(config, index) if config is not None else {}
        with self.kernel_lock:
            self.index, self._tops = index, tops
            if config is not None:
                for name, state in self.states.items():
                    if state.collector is not None:
                        state.collector.set_filter(new_filters.get(name))
                self.filters = new_filters
                self._note_uncounted()
            self._publish()

    def _note_uncounted(self) -> None:
        """Pods with a cgroup a full filter map refused: each named once in
        the log (again only after it was counted meanwhile), counted in
        kpod_pods_not_counted and reported as "map full" in the status."""
        now: dict[str, set[str]] = {}
        for name, state in self.states.items():
            collector = state.collector
            if collector is None or not collector.refused_cgroups:
                continue
            pods = set()
            for cgid in collector.refused_cgroups:
                entry = self.index.entries.get(cgid)
                pods.add(f"{entry.namespace}/{entry.pod}" if entry is not None else f"cgroup {cgid}")
            now[name] = pods
            for pod in sorted(pods - self.uncounted.get(name, set())):
                capacity = collector.map_stats.get("allowed_cgroups", (0, 0))[1]
                log.warning("%s: map full (allowed_cgroups, capacity %d): pod %s is not counted; "
                            "raise maxCgroups", name, capacity, pod)
        self.uncounted = now

    # ---- collection -----------------------------------------------------

    def targets_for(self, name: str) -> list[CgroupTarget]:
        return view.read_targets(self.index, self.filters.get(name), self._tops)

    def collect_due(self, now: float | None = None, force: bool = False) -> None:
        config = self.config
        if config is None:
            return
        now = time.monotonic() if now is None else now
        cycle_start = time.monotonic()
        for name, state in list(self.states.items()):
            collector = state.collector
            if collector is None:
                continue
            if not force and now < state.next_due:
                state.skipped_total += 1
                continue
            started = time.monotonic()
            try:
                with self.kernel_lock:
                    if self.states.get(name) is not state:
                        continue
                    # The config of this moment, not the cycle's start: a
                    # reload may have attached this collector meanwhile, and
                    # the old config gives it the default interval.
                    state.next_due = now + (self.config or config).interval_of(name)
                    snapshot = collector.collect(self.targets_for(name))
                    self._attribute(state, collector, snapshot)
            except Exception as exc:
                state.errors_total += 1
                log.warning("collector %s read failed: %s", name, exc)
                continue
            finally:
                state.duration = time.monotonic() - started
            snapshot.taken_at = time.time()
            self.snapshots[name] = snapshot
        self.cycle_duration = time.monotonic() - cycle_start
        self._publish()

    def _attribute(self, state: CollectorState, collector: Collector, snapshot: Snapshot) -> None:
        """Which pod each cgroup id of a reading is. In mode none, ids the
        last walk of the tree missed are looked up. Ids that are no counted
        pod's (a cgroup gone before it was read, a pod no longer counted) are
        added to kpod_unknown_cgroup_events_total and deleted from the maps,
        so every event is counted once, in a pod's series or there."""
        allowed = self.filters.get(collector.name)
        ids = snapshot.cgroup_ids() - {0}  # 0: node-level series
        resolved: dict[int, CgroupEntry] = {}
        if allowed is None and self.resolver is not None:
            for cgid in ids - self.index.entries.keys():
                relpath = self.resolver.lookup_path(cgid)
                if relpath is not None:
                    resolved[cgid] = cgroups.host_entry(cgid, relpath)
        state.resolved = resolved
        unknown = {cgid for cgid in ids if view.cgroup_entry(cgid, allowed, self.index, resolved) is None}
        if not unknown:
            return
        kinds = {spec.name: spec.kind for spec in collector.specs}
        for metric, series in snapshot.data.items():
            for key in [k for k in series if k[0] in unknown]:
                value = series.pop(key)
                if kinds.get(metric) != "gauge":
                    state.unknown_events[metric] = state.unknown_events.get(metric, 0.0) + view.amount(value)
        collector.forget(unknown)

    def _publish(self) -> None:
        """A new frozen view of everything the exporter shows."""
        with self.kernel_lock:  # collectors' stats change only under it
            load = self.ctx.load_seconds if self.ctx is not None else {}
            collectors = {}
            for name, state in self.states.items():
                c = state.collector
                collectors[name] = view.CollectorView(
                    name=name, specs=c.specs if c is not None else (), attached=c is not None,
                    snapshot=self.snapshots.get(name) if c is not None else None,
                    allowed=self.filters.get(name), resolved=state.resolved,
                    duration=state.duration, errors_total=state.errors_total, skipped_total=state.skipped_total,
                    cgroup_read_errors=c.cgroup_read_errors if c is not None else 0,
                    load_seconds=load.get(name) if c is not None else None,
                    map_stats=dict(c.map_stats) if c is not None else {},
                    map_update_errors=dict(c.map_update_errors) if c is not None else {},
                    pods_not_counted=len(self.uncounted.get(name, ())),
                    unknown_events=dict(state.unknown_events),
                    attached_ns=state.attached_ns if c is not None else 0)
            published = view.CollectionView(
                node_name=self.node_name, config=self.config, index=self.index, filters=self.filters,
                collectors=collectors, reloads_success=self.reloads.success, reloads_error=self.reloads.error,
                discovery_errors=self.discovery_errors_total(), cycle_duration=self.cycle_duration,
                otlp_exports=dict(self.otlp_exports),
                services=self.discovery.services if self.discovery is not None else {})
            with self._view_lock:
                self._view = published

    @property
    def view(self) -> view.CollectionView:
        """The latest published view. Discovery counts its errors in its own
        thread, between publications: the view is renewed with that count,
        so a failing source shows at once (and no scrape takes kernel_lock)."""
        with self._view_lock:
            current = self._view
            errors = self.discovery_errors_total()
            if errors != current.discovery_errors or self.otlp_exports != current.otlp_exports:
                current = self._view = dataclasses.replace(current, discovery_errors=errors,
                                                           otlp_exports=dict(self.otlp_exports))
            return current

    # ---- status ---------------------------------------------------------

    def discovery_errors_total(self) -> int:
        current = self.discovery.errors_total if self.discovery is not None else 0
        return self._past_discovery_errors + current

    def ready(self) -> bool:
        return self.config is not None and (self.discovery is None or self.discovery.synced)

    def status(self) -> AgentStatus:
        config = self.config
        wanted = list(config.node_collectors()) if config else []
        collectors: dict[str, CollectorStatus] = {}
        for name in wanted:
            state = self.states.get(name)
            collector = state.collector if state is not None else None
            partial = getattr(collector, "unavailable", None)
            uncounted = self.uncounted.get(name) if collector is not None else None
            collectors[name] = CollectorStatus(
                attached=collector is not None,
                error=state.error if state is not None and state.error else None,
                interval=config.interval_of(name) if collector is not None and config else None,
                partial=dict(partial) if partial else None,
                mapFull=MapFull(map="allowed_cgroups", podsNotCounted=len(uncounted)) if uncounted else None,
            )
        disc = self.discovery
        # The published view's pods, as /metrics shows them: the index is
        # switched before the filters and the view, and /config must not
        # report pods that a scrape does not (yet, or any more) reflect.
        published = self.view.index
        return AgentStatus(
            node=self.node_name,
            generation=config.generation if config else None,
            profile=config.profile if config else None,
            collectors=collectors,
            lastError=self.reloads.last_error,
            lastErrorTime=self.reloads.last_error_time,
            appliedAt=self.reloads.applied_at,
            discovery=DiscoveryStatus(
                mode=config.discovery.mode if config else None,
                synced=bool(disc and disc.synced),
                pods=len(published.pods),
                cgroups=len(published.entries),
                errors=self.discovery_errors_total(),
                lastError=disc.last_error if disc else None,
            ),
            time=_now(),
        )

    def shutdown(self) -> None:
        if self.pusher is not None:
            self.pusher.stop()
        if self.discovery is not None:
            self.discovery.stop()
        with self.kernel_lock:
            for name in list(self.states):
                self._detach(name)
            self._publish()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
