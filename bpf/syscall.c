/* syscall: count, errors by errno and latency per cgroup and syscall.
 *
 * The agent attaches sys_exit (and, with latency on, sys_enter) to
 * syscalls:sys_exit_<name> / sys_enter_<name> for each allowlisted syscall
 * only, so other syscalls never run this code. Both run in the calling
 * task's context. Changing the allowlist attaches or detaches tracepoints
 * and rewrites `allowed_syscalls`; no recompile.
 *
 * Counting happens at exit, which has the syscall number and the return
 * value: one program per call when latency is off, at the cost of a bare
 * per-cgroup counter. Latency adds the enter program and a start time per
 * thread, kept in place (lookup and write, no insert/delete per call: an LRU
 * insert+delete pair costs ~3x more here). The agent removes the slots of
 * threads that exited.
 *
 * allowed_syscalls: bit per (policy, syscall nr); the policy of a cgroup is
 * its namespace override's allowlist (0 = the fleet's). A syscall can be
 * attached for one namespace and still be off for others.
 */
#include "kpod_common.h"

#ifndef KPOD_MAX_POLICIES
#define KPOD_MAX_POLICIES 64
#endif
#define KPOD_NR_WORDS 8            /* 512 syscall numbers per policy */
#define KPOD_MAX_NR (KPOD_NR_WORDS * 64)

struct syscall_key {
    u64 cgid;
    u32 nr;
    u32 pad;
};

struct syscall_stats {
    u64 count;
    struct kpod_hist latency;       /* nanoseconds */
};

struct error_key {
    u64 cgid;
    u32 nr;
    u32 err;
};


/* Generic layouts of every syscalls:sys_enter_* / sys_exit_* record. */
struct sys_enter_record {
    u64 common;
    int nr;
};

struct sys_exit_record {
    u64 common;
    int nr;
    int pad;
    long ret;
};

BPF_ARRAY(allowed_syscalls, u64, KPOD_MAX_POLICIES * KPOD_NR_WORDS);
BPF_HASH(inflight, u32, u64, 65536);
BPF_HASH(syscall_stats, struct syscall_key, struct syscall_stats, KPOD_MAX_CGROUPS * 4);
BPF_HASH(syscall_errors, struct error_key, u64, KPOD_MAX_CGROUPS * 4);

static __always_inline int syscall_allowed(u64 cgid, u32 nr)
{
    u32 policy;
    if (nr >= KPOD_MAX_NR || !kpod_cgroup_policy(cgid, &policy) || policy >= KPOD_MAX_POLICIES)
        return 0;
    int word = policy * KPOD_NR_WORDS + nr / 64;
    u64 *bits = allowed_syscalls.lookup(&word);
    return bits && (*bits & (1ULL << (nr % 64)));
}

int sys_enter(struct sys_enter_record *args)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();
    u64 *slot = inflight.lookup(&tid);
    if (slot) {
        *slot = now;
        return 0;
    }
    /* First call of this thread: take a slot only for counted cgroups. */
    if (!syscall_allowed(bpf_get_current_cgroup_id(), (u32)args->nr))
        return 0;
    inflight.update(&tid, &now);
    return 0;
}

int sys_exit(struct sys_exit_record *args)
{
    u64 cgid = bpf_get_current_cgroup_id();
    u32 nr = (u32)args->nr;
    if (!syscall_allowed(cgid, nr))
        return 0;
    struct syscall_key key = {.cgid = cgid, .nr = nr};
    struct syscall_stats zero = {};
    struct syscall_stats *s = syscall_stats.lookup_or_try_init(&key, &zero);
    if (s) {
        __sync_fetch_and_add(&s->count, 1);
        u32 tid = (u32)bpf_get_current_pid_tgid();
        u64 *start = inflight.lookup(&tid);
        if (start && *start) {
            kpod_hist_add(&s->latency, bpf_ktime_get_ns() - *start);
            *start = 0;
        }
    } else {
        kpod_map_full(KPOD_ERR_syscall_stats);
    }
    long ret = args->ret;
    if (ret < 0 && ret >= -4095) {
        struct error_key ekey = {.cgid = cgid, .nr = nr, .err = (u32)(-ret)};
        u64 one = 0;
        u64 *e = syscall_errors.lookup_or_try_init(&ekey, &one);
        if (e)
            __sync_fetch_and_add(e, 1);
        else
            kpod_map_full(KPOD_ERR_syscall_errors);
    }
    return 0;
}
