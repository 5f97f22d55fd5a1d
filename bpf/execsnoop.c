/* execsnoop: process execs, forks and exits per cgroup.
 *
 * Tracepoints, all in the context of the task concerned, so the current
 * cgroup is the pod's:
 *  - sched:sched_process_exec: the task after a successful execve, one per exec.
 *  - task:task_newtask: the parent, for each new task; clone_flags tell a
 *    new process from a new thread (CLONE_THREAD), and only processes count.
 *    (sched_process_fork fires for threads too and carries no flags.)
 *  - sched:sched_process_exit with group_dead (kernel >= 6.16): the last
 *    thread of a process, so a process exit counts once however many threads
 *    it had. Older kernels lack the field: the exit of the thread-group
 *    leader counts instead (KPOD_HAVE_GROUP_DEAD unset), which is the same
 *    unless the leader ends before its other threads.
 *
 * proc_events holds one entry per tracked cgroup.
 */
#include "kpod_common.h"

#define KPOD_CLONE_THREAD 0x00010000ULL

struct proc_counts {
    u64 execs;
    u64 forks;
    u64 exits;
};

BPF_HASH(proc_events, u64, struct proc_counts, KPOD_MAX_CGROUPS);

static __always_inline struct proc_counts *counts_here(void)
{
    u64 cgid = bpf_get_current_cgroup_id();
    if (!kpod_cgroup_allowed(cgid))
        return 0;
    struct proc_counts zero = {};
    struct proc_counts *c = proc_events.lookup_or_try_init(&cgid, &zero);
    if (!c)
        kpod_map_full(KPOD_ERR_proc_events);
    return c;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    struct proc_counts *c = counts_here();
    if (c)
        __sync_fetch_and_add(&c->execs, 1);
    return 0;
}

TRACEPOINT_PROBE(task, task_newtask)
{
    if (args->clone_flags & KPOD_CLONE_THREAD)
        return 0;
    struct proc_counts *c = counts_here();
    if (c)
        __sync_fetch_and_add(&c->forks, 1);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
#ifdef KPOD_HAVE_GROUP_DEAD
    if (!args->group_dead)
        return 0;
#else
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if ((u32)pid_tgid != (u32)(pid_tgid >> 32))
        return 0;
#endif
    struct proc_counts *c = counts_here();
    if (c)
        __sync_fetch_and_add(&c->exits, 1);
    return 0;
}
