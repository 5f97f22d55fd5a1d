/* softirqs: time spent in each softirq vector, node-wide (not per pod: a
 * softirq serves whoever raised it, often many pods at once).
 *
 * irq:softirq_entry / irq:softirq_exit run in softirq context on the CPU
 * that handles the vector. A softirq does not nest inside another on one
 * CPU, so a per-CPU start time per vector is exact. Everything lives in
 * arrays: array lookups never fail, where hash updates from IRQ context can
 * be refused with -EBUSY.
 */
#include "kpod_common.h"

#define KPOD_NR_SOFTIRQS 16     /* 10 vectors today; room for new ones */

BPF_PERCPU_ARRAY(softirq_start, u64, KPOD_NR_SOFTIRQS);
BPF_ARRAY(softirq_latency, struct kpod_hist, KPOD_NR_SOFTIRQS);   /* nanoseconds */

TRACEPOINT_PROBE(irq, softirq_entry)
{
    int vec = args->vec;
    if (vec < 0 || vec >= KPOD_NR_SOFTIRQS)
        return 0;
    u64 *start = softirq_start.lookup(&vec);
    if (start)
        *start = bpf_ktime_get_ns();
    return 0;
}

TRACEPOINT_PROBE(irq, softirq_exit)
{
    int vec = args->vec;
    if (vec < 0 || vec >= KPOD_NR_SOFTIRQS)
        return 0;
    u64 *start = softirq_start.lookup(&vec);
    if (!start || *start == 0)
        return 0;   /* attached while this softirq ran */
    u64 delta = bpf_ktime_get_ns() - *start;
    *start = 0;
    struct kpod_hist *h = softirq_latency.lookup(&vec);
    if (h)
        kpod_hist_add(h, delta);
    return 0;
}
