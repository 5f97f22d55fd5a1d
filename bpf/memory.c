/* memory: OOM kills per cgroup (rss, working set, cache and major faults
 * come from memory.stat in the agent, not from BPF).
 *
 * oom:mark_victim runs in the context of the task that triggered the OOM,
 * which need not be in the victim's pod: it only records the victim's pid.
 * sched:sched_process_exit then runs in the victim's own context, where the
 * current cgroup is the victim's, and the kill is charged there.
 * oom_victims is LRU: a victim that never exits (it cannot happen for a
 * SIGKILLed task, but the map must stay bounded anyway) ages out.
 */
#include "kpod_common.h"

BPF_TABLE("lru_hash", u32, u8, oom_victims, 4096);
BPF_HASH(oom_kills, u64, u64, KPOD_MAX_CGROUPS);

TRACEPOINT_PROBE(oom, mark_victim)
{
    u32 pid = args->pid;
    u8 one = 1;
    oom_victims.update(&pid, &one);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u32 pid = args->pid;
    if (!oom_victims.lookup(&pid))
        return 0;
    oom_victims.delete(&pid);
    u64 cgid = bpf_get_current_cgroup_id();
    if (!kpod_cgroup_allowed(cgid))
        return 0;
    u64 zero = 0;
    u64 *count = oom_kills.lookup_or_try_init(&cgid, &zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        kpod_map_full(KPOD_ERR_oom_kills);
    return 0;
}
