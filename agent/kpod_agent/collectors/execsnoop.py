"""execsnoop: process execs, forks and exits per pod (bpf/execsnoop.c).

Processes, not threads: a fork is a new task without CLONE_THREAD, an exit
the end of a process's last thread."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from kpod_agent.collectors.base import BpfCollector, MetricSpec
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
    specs = (
        MetricSpec("kpod_proc_execs_total", "Successful execve calls of the cgroup's tasks.", "counter",
                   map="proc_events", value="execs"),
        MetricSpec("kpod_proc_forks_total", "Processes created by the cgroup's tasks (threads excluded).",
                   "counter", map="proc_events", value="forks"),
        MetricSpec("kpod_proc_exits_total", "Processes of the cgroup that exited (last thread gone).",
                   "counter", map="proc_events", value="exits"),
    )

    def cflags(self, config: AgentConfig) -> list[str]:
        extra = ["-DKPOD_HAVE_GROUP_DEAD=1"] if exit_has_group_dead() else []
        return super().cflags(config) + extra
