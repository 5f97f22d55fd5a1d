/* biolatency: block I/O latency (request issued to the device -> completed)
 * per cgroup.
 *
 * Contexts and attribution:
 *  - block:block_bio_queue runs in the task that submits the bio (a write()
 *    with O_DIRECT, an fsync, a read miss): its cgroup is remembered by
 *    (device, sector) in bio_owner.
 *  - block:block_rq_issue runs in the submitter or in a kworker that drains
 *    the queue: the request takes the owner of its first bio (same device
 *    and sector), else the current cgroup, and starts its clock.
 *  - block:block_rq_complete runs in IRQ or block softirq context, where
 *    the current task is unrelated: latency is charged to the cgroup found
 *    at issue. Background writeback and journal I/O are issued by kernel
 *    threads and are charged to nobody (their cgroup is not a pod's).
 *
 * Maps: bio_owner and inflight are LRU (a request can be merged away or
 * never complete from our point of view); io_latency has one entry per
 * tracked cgroup. Only io_latency is created from IRQ context, by
 * lookup_or_try_init; a refused insert is counted, not fatal.
 */
#include "kpod_common.h"

struct rq_key {
    u64 sector;
    u32 dev;
    u32 pad;
};

struct rq_start {
    u64 ts;
    u64 cgid;
};

BPF_TABLE("lru_hash", struct rq_key, u64, bio_owner, 16384);
BPF_TABLE("lru_hash", struct rq_key, struct rq_start, inflight, 16384);
BPF_HASH(io_latency, u64, struct kpod_hist, KPOD_MAX_CGROUPS);   /* nanoseconds */

TRACEPOINT_PROBE(block, block_bio_queue)
{
    u64 cgid = bpf_get_current_cgroup_id();
    if (!kpod_cgroup_allowed(cgid))
        return 0;
    struct rq_key key = {.sector = args->sector, .dev = args->dev};
    bio_owner.update(&key, &cgid);
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_issue)
{
    struct rq_key key = {.sector = args->sector, .dev = args->dev};
    struct rq_start start = {.ts = bpf_ktime_get_ns()};
    u64 *owner = bio_owner.lookup(&key);
    if (owner) {
        start.cgid = *owner;
        bio_owner.delete(&key);
    } else {
        start.cgid = bpf_get_current_cgroup_id();
        if (!kpod_cgroup_allowed(start.cgid))
            return 0;
    }
    inflight.update(&key, &start);
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_complete)
{
    struct rq_key key = {.sector = args->sector, .dev = args->dev};
    struct rq_start *start = inflight.lookup(&key);
    if (!start)
        return 0;
    u64 delta = bpf_ktime_get_ns() - start->ts;
    u64 cgid = start->cgid;
    inflight.delete(&key);
    struct kpod_hist empty = {};
    struct kpod_hist *h = io_latency.lookup_or_try_init(&cgid, &empty);
    if (h)
        kpod_hist_add(h, delta);
    else
        kpod_map_full(KPOD_ERR_io_latency);
    return 0;
}
