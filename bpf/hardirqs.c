/* hardirqs: time spent in hardware interrupt handlers, per IRQ number,
 * node-wide (an interrupt belongs to a device, not to a pod).
 *
 * irq:irq_handler_entry / irq:irq_handler_exit run in hard IRQ context.
 * Handlers run with interrupts off and do not nest, so one per-CPU start
 * time is exact. Shared IRQ lines call one handler after another: each
 * entry/exit pair is one handler run and counts once.
 *
 * irq_latency is a hash keyed by IRQ number (numbers are sparse, up to
 * thousands with MSI-X). It is only written here, with interrupts off, and
 * the agent's reads take its bucket locks with interrupts off too, so the
 * -EBUSY that IRQ-context updates can meet does not arise; a refused insert
 * (more IRQs than entries) is counted in kpod_map_errors anyway.
 */
#include "kpod_common.h"

#define KPOD_MAX_IRQS 2048

BPF_PERCPU_ARRAY(irq_start, u64, 1);
BPF_HASH(irq_latency, u32, struct kpod_hist, KPOD_MAX_IRQS);   /* nanoseconds */

TRACEPOINT_PROBE(irq, irq_handler_entry)
{
    int zero = 0;
    u64 *start = irq_start.lookup(&zero);
    if (start)
        *start = bpf_ktime_get_ns();
    return 0;
}

TRACEPOINT_PROBE(irq, irq_handler_exit)
{
    int zero = 0;
    u64 *start = irq_start.lookup(&zero);
    if (!start || *start == 0)
        return 0;   /* attached while this handler ran */
    u64 delta = bpf_ktime_get_ns() - *start;
    *start = 0;
    u32 irq = args->irq;
    struct kpod_hist empty = {};
    struct kpod_hist *h = irq_latency.lookup_or_try_init(&irq, &empty);
    if (h)
        kpod_hist_add(h, delta);
    else
        kpod_map_full(KPOD_ERR_irq_latency);
    return 0;
}
