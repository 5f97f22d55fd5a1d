"""execsnoop: process execs, forks and exits per pod (bpf/execsnoop.c).

Processes, not threads: a fork is a new task without CLONE_THREAD, an exit
the end of a process's last thread."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from kpod_agent.collectors.base import BpfCollector, CgroupTarget, MetricSpec, Snapshot, as_int
from kpod_agent.config import AgentConfig

TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def exit_has_group_dead(tracefs_roots: Iterable[str] = TRACEFS_ROOTS) -> bool:
    """sched_process_exit says whether the whole process ended (kernel >= 6.16)."""
    for root in tracefs_roots:
        try:
            return "group_dead" in (Path(root) / "events/sched/sched_process_exit/format").read_text()
        except OSError:
            continue
    return False


class ExecsnoopCollector(BpfCollector):
    name = "execsnoop"
    source = "execsnoop.c"
    cgroup_maps = ("proc_events",)
    specs = (
        MetricSpec("kpod_proc_execs_total", "Successful execve calls of the cgroup's tasks.", "counter"),
        MetricSpec("kpod_proc_forks_total", "Processes created by the cgroup's tasks (threads excluded).",
                   "counter"),
        MetricSpec("kpod_proc_exits_total", "Processes of the cgroup that exited (last thread gone).",
                   "counter"),
    )

    def cflags(self, config: AgentConfig) -> list[str]:
        extra = ["-DKPOD_HAVE_GROUP_DEAD=1"] if exit_has_group_dead() else []
        return super().cflags(config) + extra

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        snap = Snapshot()
        for key, value in self.read_map("proc_events"):
            cgid = as_int(key)
            snap.add("kpod_proc_execs_total", cgid, float(value.execs))
            snap.add("kpod_proc_forks_total", cgid, float(value.forks))
            snap.add("kpod_proc_exits_total", cgid, float(value.exits))
        return snap
