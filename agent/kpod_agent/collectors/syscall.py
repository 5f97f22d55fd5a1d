"""syscall: count, errors by errno name and latency of allowlisted syscalls
(bpf/syscall.c).

One generic enter/exit program pair is attached to the per-syscall
tracepoints of every allowlisted syscall, so syscalls outside every allowlist
run none of our code. Attaching a tracepoint takes ~0.3 ms; closing one waits
for RCU grace periods (~65 ms), so a reload that drops 200 of them would
take 13 s. The allowlist map decides what counts: a dropped syscall's bit is
cleared at once and its tracepoint is closed by a background thread, and a
syscall added back while its old tracepoint is still queued takes that one
back (two attached programs would count each call twice).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import itertools
import logging
import os
import resource
import threading
import time
from collections.abc import Iterable, Iterator, Mapping

from kpod_agent import bpfload, filters
from kpod_agent.collectors.base import (
    BpfCollector,
    CgroupTarget,
    CollectorContext,
    CollectorError,
    Hist,
    MetricSpec,
    Snapshot,
    as_int,
    delete_keys,
    hist_from,
)
from kpod_agent.config import MAX_SYSCALL_POLICIES, MAX_SYSCALLS, AgentConfig, syscall_numbers

log = logging.getLogger(__name__)

SWEEP_SECONDS = 30.0
NR_WORDS = MAX_SYSCALLS // 64  # one allowlist bit per syscall number, 64 per map word


def syscall_name(nr: int) -> str:
    """Label decoder: syscall number -> its name on this architecture."""
    return _names().get(nr, str(nr))


@functools.cache
def _names() -> dict[int, str]:
    return {nr: name for name, nr in syscall_numbers().items()}


def errno_name(err: int) -> str:
    return errno.errorcode.get(err, f"E{err}")


class TracepointCloser:
    """Closes the perf event fds of detached tracepoints, one at a time, in a
    daemon thread. Entries are keyed by (owner, tracepoint): an owner is one
    loaded BPF object, whose fds must never be taken back by another."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[tuple[int, str], int] = {}
        self._closing: tuple[int, str] | None = None
        self._thread: threading.Thread | None = None
        self._paused = 0

    def retire(self, owner: int, tracepoint: str, fd: int) -> None:
        with self._cond:
            self._pending[(owner, tracepoint)] = fd
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="tracepoint-closer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def reclaim(self, owner: int, tracepoint: str) -> int | None:
        """The fd of a still-queued tracepoint of `owner`, now the caller's again."""
        key = (owner, tracepoint)
        with self._cond:
            while self._closing == key:  # being closed: wait until it is gone
                self._cond.wait()
            return self._pending.pop(key, None)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No new close starts meanwhile: a close holds the kernel's trace
        event mutex through its grace periods, and every attach needs it."""
        with self._cond:
            self._paused += 1
        try:
            yield
        finally:
            with self._cond:
                self._paused -= 1
                self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + (self._closing is not None)

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._closing is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending or self._paused:
                    self._cond.wait()
                key = next(iter(self._pending))
                fd = self._pending.pop(key)
                self._closing = key
            try:
                os.close(fd)
            except OSError as exc:
                log.debug("closing tracepoint %s: %s", key[1], exc)
            with self._cond:
                self._closing = None
                self._cond.notify_all()


CLOSER = TracepointCloser()
_owners = itertools.count(1)


def _raise_fd_limit() -> None:
    """Two perf event fds per allowlisted syscall (enter and exit): the
    default soft limit of 1024 fds is too low for the whole table."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        if soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.debug("cannot raise the open file limit: %s", exc)


class SyscallCollector(BpfCollector):
    name = "syscall"
    source = "syscall.c"
    specs = (
        MetricSpec("kpod_syscall_count_total", "Completed calls of an allowlisted syscall.", "counter",
                   labels=("syscall",), map="syscall_stats", key=("cgid", "nr"), value="count",
                   decoders={"syscall": syscall_name}),
        MetricSpec("kpod_syscall_errors_total", "Calls of an allowlisted syscall that returned an error.",
                   "counter", labels=("syscall", "errno"), map="syscall_errors", key=("cgid", "nr", "err"),
                   decoders={"syscall": syscall_name, "errno": errno_name}),
        MetricSpec("kpod_syscall_latency_seconds", "Time from syscall entry to exit.", "histogram",
                   labels=("syscall",), unit_seconds=1e-9, map="syscall_stats", key=("cgid", "nr"),
                   value="latency", decoders={"syscall": syscall_name}),
    )

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self.numbers = syscall_numbers()
        self.attached_syscalls: set[str] = set()
        self.unavailable: dict[str, str] = {}
        self._bits: dict[int, int] = {}
        self.latency = True
        self._last_sweep = 0.0
        self._owner = 0
        # Values of entries deleted because their cgroup changed policy:
        # (cgroup id, nr) -> (count, latency), added to later reads so the
        # counters never go back.
        self._carry: dict[tuple[int, int], tuple[float, Hist]] = {}

    def cflags(self, config: AgentConfig) -> list[str]:
        return super().cflags(config) + [f"-DKPOD_MAX_POLICIES={MAX_SYSCALL_POLICIES}", f"-DKPOD_NR_WORDS={NR_WORDS}"]

    def after_load(self, config: AgentConfig) -> None:
        _raise_fd_limit()
        self._owner = next(_owners)
        self.attached_syscalls = set()
        self._bits = {}
        self._carry = {}
        self.latency = False
        self.reconfigure(config)

    def reconfigure(self, config: AgentConfig) -> bool:
        policies = filters.syscall_policies(config).allowlists
        wanted: set[str] = set()
        for allowlist in policies:
            wanted.update(n for n in allowlist if n in self.numbers)
        latency = config.syscall_latency()
        with CLOSER.paused():
            self._switch_latency(latency)
        # Bits first: what leaves the allowlist stops counting before its
        # tracepoint is queued for closing; what joins counts once attached.
        self._write_bits(policies)
        with CLOSER.paused():
            self._attach_tracepoints(wanted)
        return True

    def _switch_latency(self, latency: bool) -> None:
        if latency != self.latency:
            if not latency:
                self._write_flags(False)
            # Enter probes come and go with latency: the exit ones stay.
            for name in sorted(self.attached_syscalls):
                if latency:
                    self._attach_tp(name, enter=True)
                else:
                    self._retire_tp(name, enter=True)
            self.latency = latency
            if latency:
                self._write_flags(True)

    def _write_flags(self, latency: bool) -> None:
        table = self.bpf["syscall_flags"]
        value = table.Leaf()
        value.latency = int(latency)
        table[ctypes.c_int(0)] = value

    def _write_bits(self, policies: list[list[str]]) -> None:
        table = self.bpf["allowed_syscalls"]
        bits: dict[int, int] = {}
        for policy, allowlist in enumerate(policies):
            for name in allowlist:
                nr = self.numbers.get(name)
                if nr is None or nr >= NR_WORDS * 64:
                    continue
                word = policy * NR_WORDS + nr // 64
                bits[word] = bits.get(word, 0) | (1 << (nr % 64))
        for word in set(bits) | set(self._bits):
            if bits.get(word, 0) != self._bits.get(word, 0):
                table[ctypes.c_int(word)] = ctypes.c_uint64(bits.get(word, 0))
        self._bits = bits

    def _attach_tracepoints(self, wanted: set[str]) -> None:
        for name in sorted(self.attached_syscalls - wanted):
            self._detach_one(name)
        self.unavailable = {}
        for name in sorted(wanted - self.attached_syscalls):
            try:
                self._attach_one(name)
            except CollectorError as exc:
                self.unavailable[name] = str(exc)
                log.warning("syscall: %s", exc)
        if not self.attached_syscalls and wanted:
            raise CollectorError("no allowlisted syscall could be attached: " + "; ".join(self.unavailable.values()))

    @staticmethod
    def _tracepoint(name: str, enter: bool) -> str:
        return f"syscalls:sys_{'enter' if enter else 'exit'}_{name}"

    def _attach_tp(self, name: str, enter: bool) -> None:
        tp = self._tracepoint(name, enter)
        if tp.encode() in self.bpf.tracepoint_fds:
            return
        fd = CLOSER.reclaim(self._owner, tp)
        if fd is not None:  # still attached, with this object's program
            self.bpf.tracepoint_fds[tp.encode()] = fd
            return
        self.bpf.attach_tracepoint(tp=tp, fn_name="sys_enter" if enter else "sys_exit")

    def _retire_tp(self, name: str, enter: bool) -> None:
        tp = self._tracepoint(name, enter)
        fd = self.bpf.tracepoint_fds.pop(tp.encode(), None)
        if fd is not None:
            CLOSER.retire(self._owner, tp, fd)

    def _attach_one(self, name: str) -> None:
        enter, leave = self._tracepoint(name, True), self._tracepoint(name, False)
        if not bpfload.tracepoint_exists(*enter.split(":")) or not bpfload.tracepoint_exists(*leave.split(":")):
            raise CollectorError(f"tracepoint {enter} not found on this kernel")
        ctypes.set_errno(0)
        try:
            # Exit first: a start time needs its exit to be consumed.
            self._attach_tp(name, enter=False)
            if self.latency:
                self._attach_tp(name, enter=True)
        except Exception as exc:
            message = bpfload.describe(exc)  # before the detach's calls overwrite errno
            self._detach_one(name)
            raise CollectorError(f"cannot attach {enter}: {message}") from None
        self.attached_syscalls.add(name)

    def _detach_one(self, name: str) -> None:
        self._retire_tp(name, enter=True)
        self._retire_tp(name, enter=False)
        self.attached_syscalls.discard(name)

    def detach(self) -> None:
        if self.bpf is not None:
            # bcc would close them one by one (~65 ms each) before returning.
            for tp in list(self.bpf.tracepoint_fds):
                CLOSER.retire(self._owner, tp.decode(), self.bpf.tracepoint_fds.pop(tp))
            self.attached_syscalls = set()
        super().detach()

    def set_filter(self, allowed: Mapping[int, int] | None) -> None:
        before = dict(self._allowed)
        super().set_filter(allowed)
        # An entry keeps the policy it was counted under and may still allow
        # a syscall the cgroup's new allowlist does not: start it afresh.
        moved = {cgid for cgid, policy in self._allowed.items() if before.get(cgid, policy) != policy}
        if moved and self.bpf is not None:
            self._restart_entries(moved)

    def _restart_entries(self, cgroup_ids: set[int]) -> None:
        table = self.bpf["syscall_stats"]
        stale = []
        for key, value in self.read_map("syscall_stats"):
            if key.cgid in cgroup_ids:
                stale.append(key)
                count, hist = self._carry.get((key.cgid, key.nr), (0.0, Hist((), 0.0)))
                carried = _hist_sum(hist, hist_from(value.latency))
                self._carry[(key.cgid, key.nr)] = (count + float(value.count), carried)
        delete_keys(table, stale)

    def _sweep_threads(self) -> None:
        """Free the start-time slots of threads that exited."""
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_SECONDS:
            return
        self._last_sweep = now
        table = self.bpf["inflight"]
        proc = self.ctx.proc_root
        keys = list(table.keys())
        dead = [k for k in keys if not os.path.exists(f"{proc}/{as_int(k)}")]
        delete_keys(table, dead)
        self.map_stats["inflight"] = (len(keys) - len(dead), table.max_entries)

    def forget(self, cgroup_ids: set[int]) -> None:
        if not cgroup_ids:
            return
        self._carry = {k: v for k, v in self._carry.items() if k[0] not in cgroup_ids}
        if self.bpf is None:
            return
        for map_name in ("syscall_stats", "syscall_errors"):
            table = self.bpf[map_name]
            delete_keys(table, [k for k in table.keys() if k.cgid in cgroup_ids])

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        # The maps are read by the specs; what is the syscall collector's own:
        # counts of entries restarted by a policy change (_carry) are added
        # back, and the latency histogram exists only while the enter probes
        # are attached (without them it would claim zero observations).
        self._sweep_threads()
        snap = super().collect(targets)
        if not self.latency:
            snap.data.pop("kpod_syscall_latency_seconds", None)
        for (cgid, nr), (count, hist) in self._carry.items():
            name = syscall_name(nr)
            snap.add("kpod_syscall_count_total", cgid, count, (name,))
            if self.latency and hist.slots:
                snap.add("kpod_syscall_latency_seconds", cgid, hist, (name,))
        return snap


def _hist_sum(a: Hist, b: Hist) -> Hist:
    if not a.slots:
        return b
    if not b.slots:
        return a
    return Hist(tuple(x + y for x, y in zip(a.slots, b.slots, strict=True)), a.sum + b.sum)
