/* syscall: count, errors by errno and latency per cgroup and syscall.
 *
 * The agent attaches sys_enter / sys_exit below to syscalls:sys_enter_<name>
 * and syscalls:sys_exit_<name> for each allowlisted syscall only, so other
 * syscalls never run this code. Both run in the calling task's context.
 * Changing the allowlist attaches or detaches tracepoints and rewrites
 * `allowed_syscalls`; no recompile.
 *
 * allowed_syscalls: bit per (policy, syscall nr); the policy of a cgroup is
 * its namespace override's allowlist (0 = the fleet's). A syscall can be
 * attached for one namespace and still be off for others.
 * inflight: enter timestamp per thread; LRU so that threads killed inside a
 * syscall do not leak entries.
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

struct inflight_val {
    u64 ts;
    u64 cgid;
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
BPF_TABLE("lru_hash", u64, struct inflight_val, inflight, 65536);
BPF_HASH(syscall_stats, struct syscall_key, struct syscall_stats, KPOD_MAX_CGROUPS * 4);
BPF_HASH(syscall_errors, struct error_key, u64, KPOD_MAX_CGROUPS * 4);

int sys_enter(struct sys_enter_record *args)
{
    u32 nr = args->nr;
    if (nr >= KPOD_MAX_NR)
        return 0;
    u64 cgid = bpf_get_current_cgroup_id();
    u32 policy;
    if (!kpod_cgroup_policy(cgid, &policy) || policy >= KPOD_MAX_POLICIES)
        return 0;
    int word = policy * KPOD_NR_WORDS + nr / 64;
    u64 *bits = allowed_syscalls.lookup(&word);
    if (!bits || !(*bits & (1ULL << (nr % 64))))
        return 0;
    u64 tid = bpf_get_current_pid_tgid();
    struct inflight_val val = {.ts = bpf_ktime_get_ns(), .cgid = cgid};
    inflight.update(&tid, &val);
    return 0;
}

int sys_exit(struct sys_exit_record *args)
{
    u64 tid = bpf_get_current_pid_tgid();
    struct inflight_val *start = inflight.lookup(&tid);
    if (!start)
        return 0;
    u64 delta = bpf_ktime_get_ns() - start->ts;
    struct syscall_key key = {.cgid = start->cgid, .nr = (u32)args->nr};
    inflight.delete(&tid);

    struct syscall_stats zero = {};
    struct syscall_stats *s = syscall_stats.lookup_or_try_init(&key, &zero);
    if (s) {
        __sync_fetch_and_add(&s->count, 1);
        kpod_hist_add(&s->latency, delta);
    }
    long ret = args->ret;
    if (ret < 0 && ret >= -4095) {
        struct error_key ekey = {.cgid = key.cgid, .nr = key.nr, .err = (u32)(-ret)};
        u64 one = 0;
        u64 *e = syscall_errors.lookup_or_try_init(&ekey, &one);
        if (e)
            __sync_fetch_and_add(e, 1);
    }
    return 0;
}
