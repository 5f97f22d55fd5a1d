/* syscall: count, errors by errno and latency per cgroup and syscall.
 *
 * The agent attaches sys_exit (and, with latency on, sys_enter) to
 * syscalls:sys_exit_<name> / sys_enter_<name> for each allowlisted syscall
 * only, so other syscalls never run this code. Both run in the calling
 * task's context. The allowlist itself is the `allowed_syscalls` map: a
 * syscall removed from it stops counting at once, while its tracepoint is
 * closed in the background (each close waits ~65 ms for RCU grace periods).
 *
 * Counting happens at exit, which has the syscall number and the return
 * value. The common case, a (cgroup, syscall) pair seen before, costs one
 * hash lookup: the pair's entry remembers the cgroup's policy, so the
 * cgroup filter is consulted only for a new pair or a syscall its stored
 * policy does not allow (the cgroup may have moved to another allowlist).
 * The agent deletes the entries of a cgroup that leaves the filter or
 * changes policy, so an entry never outlives its right to count.
 *
 * Latency (syscall_flags[0].latency) adds the enter program and a start time
 * per thread, kept in place (lookup and write, no insert/delete per call: an
 * LRU insert+delete pair costs ~3x more here). The agent removes the slots of
 * threads that exited.
 *
 * allowed_syscalls: bit per (policy, syscall nr); the policy of a cgroup is
 * its namespace override's allowlist (0 = the fleet's). A syscall can be
 * attached for one namespace and still be off for others.
 * Sizes: syscall_stats and syscall_errors hold 4 (cgroup, syscall) pairs per
 * cgroup of KPOD_MAX_CGROUPS on average; inflight one slot per thread.
 */
#include "kpod_common.h"

#ifndef KPOD_MAX_POLICIES
#define KPOD_MAX_POLICIES 64
#endif
#ifndef KPOD_NR_WORDS              /* set by the agent from config.MAX_SYSCALLS */
#define KPOD_NR_WORDS 8            /* 512 syscall numbers per policy */
#endif
#define KPOD_MAX_NR (KPOD_NR_WORDS * 64)

struct syscall_key {
    u64 cgid;
    u32 nr;
    u32 pad;
};

struct syscall_stats {
    u64 count;
    u32 policy;                     /* the cgroup's policy when last checked */
    u32 pad;
    struct kpod_hist latency;       /* nanoseconds */
};

struct error_key {
    u64 cgid;
    u32 nr;
    u32 err;
};

struct syscall_flags {
    u32 latency;
    u32 pad;
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
BPF_ARRAY(syscall_flags, struct syscall_flags, 1);
BPF_HASH(inflight, u32, u64, 65536);
BPF_HASH(syscall_stats, struct syscall_key, struct syscall_stats, KPOD_MAX_CGROUPS * 4);
BPF_HASH(syscall_errors, struct error_key, u64, KPOD_MAX_CGROUPS * 4);

static __always_inline int policy_allows(u32 policy, u32 nr)
{
    /* Array lookups are inlined by the verifier: no helper call. */
    int word = (policy % KPOD_MAX_POLICIES) * KPOD_NR_WORDS + nr / 64;
    u64 *bits = allowed_syscalls.lookup(&word);
    return bits && (*bits & (1ULL << (nr % 64)));
}

static __always_inline int syscall_allowed(u64 cgid, u32 nr, u32 *policy)
{
    if (nr >= KPOD_MAX_NR || !kpod_cgroup_policy(cgid, policy) || *policy >= KPOD_MAX_POLICIES)
        return 0;
    return policy_allows(*policy, nr);
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
    u32 policy;
    if (!syscall_allowed(bpf_get_current_cgroup_id(), (u32)args->nr, &policy))
        return 0;
    inflight.update(&tid, &now);
    return 0;
}

int sys_exit(struct sys_exit_record *args)
{
    u64 cgid = bpf_get_current_cgroup_id();
    u32 nr = (u32)args->nr;
    if (nr >= KPOD_MAX_NR)
        return 0;
    struct syscall_key key = {.cgid = cgid, .nr = nr};
    struct syscall_stats *s = syscall_stats.lookup(&key);
    if (!s || !policy_allows(s->policy, nr)) {
        u32 policy;
        if (!syscall_allowed(cgid, nr, &policy))
            return 0;
        if (s) {
            s->policy = policy;
        } else {
            struct syscall_stats zero = {.policy = policy};
            s = syscall_stats.lookup_or_try_init(&key, &zero);
            if (!s) {
                kpod_map_full(KPOD_ERR_syscall_stats);
                return 0;
            }
        }
    }
    __sync_fetch_and_add(&s->count, 1);
    int zero_idx = 0;
    struct syscall_flags *flags = syscall_flags.lookup(&zero_idx);
    if (flags && flags->latency) {
        u32 tid = (u32)bpf_get_current_pid_tgid();
        u64 *start = inflight.lookup(&tid);
        if (start && *start) {
            kpod_hist_add(&s->latency, bpf_ktime_get_ns() - *start);
            *start = 0;
        }
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
