/* Shared by every kpod collector program.
 *
 * Attribution: bpf_get_current_cgroup_id() is the inode of the current task's
 * cgroup2 directory, which the agent maps to namespace/pod/container.
 *
 * Filtering: the agent keeps `allowed_cgroups` in step with discovery (pods
 * that pass the namespace filter, pod selector and this collector's
 * per-namespace enablement). The value is a policy index used by programs
 * that filter further (syscall allowlists per namespace override).
 * `count_all[0]` == 1 counts every cgroup (standalone mode, no discovery);
 * it starts at 0, so a program counts nothing until the agent has written
 * its filter: no stray entries from the moment between load and filter.
 * Both are maps, so filters change at run time without a recompile.
 */
#ifndef KPOD_COMMON_H
#define KPOD_COMMON_H

#ifndef KPOD_MAX_CGROUPS
#define KPOD_MAX_CGROUPS 4096
#endif
/* log2 slots per histogram: slot s counts values in [2^(s-1), 2^s) of the
 * histogram's unit; the last slot also takes everything larger. */
#define KPOD_SLOTS 32

BPF_HASH(allowed_cgroups, u64, u32, KPOD_MAX_CGROUPS);
BPF_ARRAY(count_all, u32, 1);

/* Map updates refused in BPF, one slot per map: a full map (or -EBUSY when
 * an IRQ interrupts an update of the same map) loses the event, is counted
 * here and never fails the program. The agent passes -DKPOD_ERR_<map>=<slot>
 * for each map it reads and reports kpod_bpf_map_update_errors_total{map}. */
#define KPOD_ERR_SLOTS 16
BPF_ARRAY(kpod_map_errors, u64, KPOD_ERR_SLOTS);

struct kpod_hist {
    u64 slots[KPOD_SLOTS];
    u64 sum;    /* exact sum in the histogram's unit (ns or us) */
};

static __always_inline int kpod_cgroup_policy(u64 cgid, u32 *policy)
{
    int zero = 0;
    u32 *all = count_all.lookup(&zero);
    if (all && *all) {
        *policy = 0;
        return 1;
    }
    u32 *p = allowed_cgroups.lookup(&cgid);
    if (!p)
        return 0;
    *policy = *p;
    return 1;
}

static __always_inline void kpod_map_full(int slot)
{
    u64 *count = kpod_map_errors.lookup(&slot);
    if (count)
        __sync_fetch_and_add(count, 1);
}

static __always_inline int kpod_cgroup_allowed(u64 cgid)
{
    u32 policy;
    return kpod_cgroup_policy(cgid, &policy);
}

/* Round up so that a slot is an upper bound (le = 2^slot). */
static __always_inline u32 kpod_log2_slot(u64 v)
{
    u32 slot = 0;
    if (v <= 1)
        return 0;
    v -= 1;
#pragma unroll
    for (int i = 0; i < 6; i++) {
        u32 shift = 32 >> i;
        if (v >> shift) {
            v >>= shift;
            slot += shift;
        }
    }
    slot += 1;
    if (slot >= KPOD_SLOTS)
        slot = KPOD_SLOTS - 1;
    return slot;
}

static __always_inline void kpod_hist_add(struct kpod_hist *h, u64 value)
{
    /* kpod_log2_slot clamps to KPOD_SLOTS - 1: the verifier sees the bound too. */
    __sync_fetch_and_add(&h->slots[kpod_log2_slot(value)], 1);
    __sync_fetch_and_add(&h->sum, value);
}

/* One end of a TCP topology edge, as the network collector keys its edges
 * and the l7 collector its requests per edge (the same layout, so the agent
 * joins them). Addresses are IPv6 or IPv4-mapped IPv6, as
 * sock:inet_sock_set_state gives them. */
#define KPOD_ROLE_CLIENT 1
#define KPOD_ROLE_SERVER 2

struct kpod_peer {
    u8 local[16];
    u8 remote[16];
    u16 port;   /* the server's port */
    u8 role;    /* KPOD_ROLE_CLIENT / KPOD_ROLE_SERVER */
    u8 pad[5];
};

static __always_inline void kpod_peer_fill(struct kpod_peer *peer, const u8 *local, const u8 *remote,
                                           u16 port, u8 role)
{
    bpf_probe_read_kernel(&peer->local, sizeof(peer->local), local);
    bpf_probe_read_kernel(&peer->remote, sizeof(peer->remote), remote);
    peer->port = port;
    peer->role = role;
}

#endif
