"""syscall: count, errors by errno name and latency of allowlisted syscalls
(bpf/syscall.c).

One generic enter/exit program pair is attached to the per-syscall
tracepoints of every allowlisted syscall, so syscalls outside every allowlist
run none of our code. Past RAW_THRESHOLD syscalls the pair goes on
raw_syscalls instead: one attachment, but every syscall pays for it.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import time
from collections.abc import Iterable

from kpod_agent import bpfload, filters
from kpod_agent.collectors.base import (
    BpfCollector,
    as_int,
    CgroupTarget,
    CollectorError,
    MetricSpec,
    Snapshot,
    delete_keys,
    hist_from,
)
from kpod_agent.config import AgentConfig, syscall_numbers

log = logging.getLogger(__name__)

RAW_THRESHOLD = 96
SWEEP_SECONDS = 30.0
NR_WORDS = 8  # 512 syscall numbers per policy, as in syscall.c
RAW = "raw_syscalls"


class SyscallCollector(BpfCollector):
    name = "syscall"
    source = "syscall.c"
    error_maps = ("syscall_stats", "syscall_errors")
    specs = (
        MetricSpec("kpod_syscall_count_total", "Completed calls of an allowlisted syscall.", "counter",
                   labels=("syscall",)),
        MetricSpec("kpod_syscall_errors_total", "Calls of an allowlisted syscall that returned an error.",
                   "counter", labels=("syscall", "errno")),
        MetricSpec("kpod_syscall_latency_seconds", "Time from syscall entry to exit.", "histogram",
                   labels=("syscall",), unit_seconds=1e-9),
    )

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self.numbers = syscall_numbers()
        self.names = {nr: name for name, nr in self.numbers.items()}
        self.attached_syscalls: set[str] = set()
        self.unavailable: dict[str, str] = {}
        self._bits: dict[int, int] = {}
        self.latency = True
        self._last_sweep = 0.0

    def cflags(self, config: AgentConfig) -> list[str]:
        return super().cflags(config) + [f"-DKPOD_MAX_POLICIES={filters.MAX_SYSCALL_POLICIES}"]

    def after_load(self, config: AgentConfig) -> None:
        self.attached_syscalls = set()
        self._bits = {}
        self.latency = config.syscall_latency()
        self.reconfigure(config)

    def reconfigure(self, config: AgentConfig) -> bool:
        policies = filters.syscall_policies(config).allowlists
        wanted: set[str] = set()
        for allowlist in policies:
            wanted.update(n for n in allowlist if n in self.numbers)
        self._write_bits(policies)
        if config.syscall_latency() != self.latency:
            # Enter probes come and go with latency: re-attach every syscall.
            for name in sorted(self.attached_syscalls):
                self._detach_one(name)
            self.latency = config.syscall_latency()
        self._attach_tracepoints(wanted)
        return True

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
        use_raw = len(wanted) > RAW_THRESHOLD
        target = {RAW} if use_raw else wanted
        for name in sorted(self.attached_syscalls - target):
            self._detach_one(name)
        self.unavailable = {}
        for name in sorted(target - self.attached_syscalls):
            try:
                self._attach_one(name)
            except CollectorError as exc:
                self.unavailable[name] = str(exc)
                log.warning("syscall: %s", exc)
        if not self.attached_syscalls and target:
            raise CollectorError("no allowlisted syscall could be attached: " + "; ".join(self.unavailable.values()))

    def _tracepoints(self, name: str) -> tuple[str, str]:
        if name == RAW:
            return "raw_syscalls:sys_enter", "raw_syscalls:sys_exit"
        return f"syscalls:sys_enter_{name}", f"syscalls:sys_exit_{name}"

    def _attach_one(self, name: str) -> None:
        enter, leave = self._tracepoints(name)
        if not bpfload.tracepoint_exists(*enter.split(":")) or not bpfload.tracepoint_exists(*leave.split(":")):
            raise CollectorError(f"tracepoint {enter} not found on this kernel")
        ctypes.set_errno(0)
        try:
            # Exit first: a start time needs its exit to be consumed.
            self.bpf.attach_tracepoint(tp=leave, fn_name="sys_exit")
            if self.latency:
                self.bpf.attach_tracepoint(tp=enter, fn_name="sys_enter")
        except Exception as exc:
            message = bpfload.describe(exc)  # before the detach's calls overwrite errno
            self._detach_one(name)
            raise CollectorError(f"cannot attach {enter}: {message}") from None
        self.attached_syscalls.add(name)

    def _detach_one(self, name: str) -> None:
        for tp in self._tracepoints(name):
            if tp.encode() in self.bpf.tracepoint_fds:
                self.bpf.detach_tracepoint(tp)
        self.attached_syscalls.discard(name)

    def _sweep_threads(self) -> None:
        """Free the start-time slots of threads that exited."""
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_SECONDS:
            return
        self._last_sweep = now
        table = self.bpf["inflight"]
        proc = self.ctx.proc_root
        dead = [k for k in table.keys() if not os.path.exists(f"{proc}/{as_int(k)}")]
        delete_keys(table, dead)

    def forget(self, cgroup_ids: set[int]) -> None:
        if self.bpf is None or not cgroup_ids:
            return
        for map_name in ("syscall_stats", "syscall_errors"):
            table = self.bpf[map_name]
            delete_keys(table, [k for k in table.keys() if k.cgid in cgroup_ids])

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        self._sweep_threads()
        snap = Snapshot()
        for key, value in self.read_map("syscall_stats"):
            name = self.names.get(key.nr, str(key.nr))
            snap.add("kpod_syscall_count_total", key.cgid, float(value.count), (name,))
            if self.latency:  # without sys_enter the histogram would claim zero observations
                snap.add("kpod_syscall_latency_seconds", key.cgid, hist_from(value.latency), (name,))
        for key, value in self.read_map("syscall_errors"):
            name = self.names.get(key.nr, str(key.nr))
            errname = errno.errorcode.get(key.err, f"E{key.err}")
            snap.add("kpod_syscall_errors_total", key.cgid, float(as_int(value)), (name, errname))
        return snap
