/* cpu: run-queue latency and context switches per cgroup.
 *
 * Tracepoints: sched:sched_wakeup, sched:sched_wakeup_new (waker's context),
 * sched:sched_switch (context of the task switched out, `prev`).
 *
 * A wakeup runs as the waker, so the wakeup time is keyed by the wakee's pid.
 * At sched_switch the current task is `prev`, so the wait of `next` cannot be
 * charged to next's cgroup there: it is parked in `pending_wait` and charged
 * when `next` is itself switched out (then it is current). Preempted tasks
 * (still runnable) start a new wait at the switch.
 *
 * Maps: wake_ts / pending_wait are LRU (a task can exit between the events;
 * sized for every runnable task on a large node); per-cgroup maps hold one
 * entry per tracked cgroup.
 */
#include "kpod_common.h"

BPF_TABLE("lru_hash", u32, u64, wake_ts, 65536);
BPF_TABLE("lru_hash", u32, u64, pending_wait, 65536);
BPF_HASH(runq_latency, u64, struct kpod_hist, KPOD_MAX_CGROUPS);
BPF_HASH(context_switches, u64, u64, KPOD_MAX_CGROUPS);

static __always_inline void mark_runnable(u32 pid)
{
    if (pid == 0)
        return;
    u64 now = bpf_ktime_get_ns();
    wake_ts.update(&pid, &now);
}

TRACEPOINT_PROBE(sched, sched_wakeup)
{
    mark_runnable(args->pid);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new)
{
    mark_runnable(args->pid);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    u32 prev = args->prev_pid, next = args->next_pid;
    u64 now = bpf_ktime_get_ns();

    if (prev != 0) {
        u64 cgid = bpf_get_current_cgroup_id();
        if (kpod_cgroup_allowed(cgid)) {
            u64 zero = 0;
            u64 *count = context_switches.lookup_or_try_init(&cgid, &zero);
            if (count)
                __sync_fetch_and_add(count, 1);
            else
                kpod_map_full(KPOD_ERR_context_switches);
            u64 *wait = pending_wait.lookup(&prev);
            if (wait) {
                struct kpod_hist empty = {};
                struct kpod_hist *h = runq_latency.lookup_or_try_init(&cgid, &empty);
                if (h)
                    kpod_hist_add(h, *wait);
                else
                    kpod_map_full(KPOD_ERR_runq_latency);
            }
        }
        pending_wait.delete(&prev);
        /* TASK_RUNNING (0) or the preemption marker above the state bits:
         * prev stays on the run queue and starts waiting now. */
        if ((args->prev_state & 0xff) == 0)
            wake_ts.update(&prev, &now);
    }

    if (next != 0) {
        u64 *ts = wake_ts.lookup(&next);
        if (ts) {
            u64 delta = now - *ts;
            pending_wait.update(&next, &delta);
            wake_ts.delete(&next);
        }
    }
    return 0;
}
