/* tcpdrop: TCP packets the kernel dropped, charged to the pod whose socket
 * they were for.
 *
 * skb:kfree_skb runs where the packet died: softirq for received packets,
 * any context on transmit. The current cgroup there is not the owner's, so:
 *  - rx_sk (the receiving socket, kernel >= 6.12) -> sock_owner, learned in
 *    process context: sock:inet_sock_set_state CLOSE->SYN_SENT (connect) and
 *    CLOSE->LISTEN (listen), sock:sock_send_length / sock_recv_length for
 *    accepted sockets. Only TCP sockets enter sock_owner, so a drop whose
 *    rx_sk is there is a TCP drop on a pod's socket, whatever its reason.
 *  - a SYN to a port nobody listens on dies without rx_sk (reason
 *    NO_SOCKET). When the sender is a local pod, the kernel's reset reply
 *    (tcp:tcp_send_reset, same CPU, just before the drop) gives the SYN's
 *    4-tuple (the reset's destination is the connecting side); the connecting socket then leaves SYN_SENT for CLOSE with that
 *    tuple, and the drop is charged to its owner. Refused connections to
 *    other hosts are dropped there, not here, and are not counted.
 * Drops of packets no pod socket was involved in are not counted.
 *
 * Maps: sock_owner, refused are LRU (sockets vanish without notice); the
 * per-CPU reset slot carries one tuple from tcp_send_reset to kfree_skb.
 * KPOD_DROP_NO_SOCKET is the running kernel's enum value, read by the agent
 * from the tracepoint's format file. The records of skb:kfree_skb and
 * tcp:tcp_send_reset (struct kfree_skb_args, send_reset_args) are generated
 * by the agent from their format files, prepended to this text, and the two
 * functions attached by name: the kernel headers here predate their enums.
 */
#include "kpod_common.h"

#ifndef KPOD_DROP_NO_SOCKET
#define KPOD_DROP_NO_SOCKET 3
#endif
#define KPOD_AF_INET 2
#define KPOD_AF_INET6 10
#define KPOD_IPPROTO_TCP 6
#define KPOD_TCP_SYN_SENT 2
#define KPOD_TCP_CLOSE 7
#define KPOD_TCP_LISTEN 10

struct conn_key {
    u8 laddr[16];   /* the connecting side: the pod's address and port */
    u8 raddr[16];
    u16 lport;      /* host byte order */
    u16 rport;
    u32 family;
};

struct reset_slot {
    u64 skb;
    struct conn_key key;
};

BPF_TABLE("lru_hash", u64, u64, sock_owner, 65536);
BPF_TABLE("lru_hash", struct conn_key, u8, refused, 4096);
BPF_PERCPU_ARRAY(reset_slot, struct reset_slot, 1);
BPF_HASH(tcp_drops, u64, u64, KPOD_MAX_CGROUPS);

static __always_inline void count_drop(u64 cgid)
{
    u64 zero = 0;
    u64 *count = tcp_drops.lookup_or_try_init(&cgid, &zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        kpod_map_full(KPOD_ERR_tcp_drops);
}

static __always_inline void learn_owner(u64 sk)
{
    u64 cgid = bpf_get_current_cgroup_id();
    if (!kpod_cgroup_allowed(cgid))
        return;
    u64 *owner = sock_owner.lookup(&sk);
    if (!owner || *owner != cgid)
        sock_owner.update(&sk, &cgid);
}

/* ::ffff:a.b.c.d: a dual-stack socket talking IPv4, whose packets (and the
 * reset's addresses) are plain IPv4; the record's v4 fields hold a.b.c.d. */
static __always_inline int is_v4_mapped(const u8 *addr)
{
#pragma unroll
    for (int i = 0; i < 10; i++)
        if (addr[i])
            return 0;
    return addr[10] == 0xff && addr[11] == 0xff;
}

TRACEPOINT_PROBE(sock, sock_send_length)
{
    if (args->protocol == KPOD_IPPROTO_TCP)
        learn_owner((u64)args->sk);
    return 0;
}

TRACEPOINT_PROBE(sock, sock_recv_length)
{
    if (args->protocol == KPOD_IPPROTO_TCP)
        learn_owner((u64)args->sk);
    return 0;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != KPOD_IPPROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->oldstate == KPOD_TCP_CLOSE &&
        (args->newstate == KPOD_TCP_SYN_SENT || args->newstate == KPOD_TCP_LISTEN)) {
        learn_owner(sk);
        return 0;
    }
    if (args->newstate != KPOD_TCP_CLOSE)
        return 0;
    if (args->oldstate == KPOD_TCP_SYN_SENT) {
        /* Copied with a helper: clang would otherwise read these record
         * fields through a moved context pointer, which the verifier refuses. */
        struct conn_key key = {};
        u8 saddr_v6[16], daddr_v6[16];
        bpf_probe_read_kernel(saddr_v6, sizeof(saddr_v6), args->saddr_v6);
        bpf_probe_read_kernel(daddr_v6, sizeof(daddr_v6), args->daddr_v6);
        if (args->family == KPOD_AF_INET || is_v4_mapped(daddr_v6)) {
            bpf_probe_read_kernel(key.laddr, 4, args->saddr);
            bpf_probe_read_kernel(key.raddr, 4, args->daddr);
            key.family = KPOD_AF_INET;
        } else {
            __builtin_memcpy(key.laddr, saddr_v6, 16);
            __builtin_memcpy(key.raddr, daddr_v6, 16);
            key.family = KPOD_AF_INET6;
        }
        key.lport = args->sport;
        key.rport = args->dport;
        if (refused.lookup(&key)) {
            refused.delete(&key);
            u64 *owner = sock_owner.lookup(&sk);
            if (owner)
                count_drop(*owner);
        }
    }
    sock_owner.delete(&sk);
    return 0;
}

int on_send_reset(struct send_reset_args *args)
{
    if (args->skaddr != 0)
        return 0;   /* a socket answered: any drop carries it as rx_sk */
    int zero = 0;
    struct reset_slot *slot = reset_slot.lookup(&zero);
    if (!slot)
        return 0;
    /* saddr/daddr: sockaddr_in or sockaddr_in6 of the reset being sent; its
     * destination is the side that connected. */
    u16 family = *(u16 *)&args->daddr[0];
    __builtin_memset(&slot->key, 0, sizeof(slot->key));
    if (family == KPOD_AF_INET) {
        __builtin_memcpy(slot->key.laddr, &args->daddr[4], 4);
        __builtin_memcpy(slot->key.raddr, &args->saddr[4], 4);
    } else if (family == KPOD_AF_INET6) {
        __builtin_memcpy(slot->key.laddr, &args->daddr[8], 16);
        __builtin_memcpy(slot->key.raddr, &args->saddr[8], 16);
    } else {
        slot->skb = 0;
        return 0;
    }
    slot->key.family = family;
    slot->key.lport = bpf_ntohs(*(u16 *)&args->daddr[2]);
    slot->key.rport = bpf_ntohs(*(u16 *)&args->saddr[2]);
    slot->skb = (u64)args->skbaddr;
    return 0;
}

int on_kfree_skb(struct kfree_skb_args *args)
{
    u64 rx_sk = (u64)args->rx_sk;
    if (rx_sk) {
        u64 *owner = sock_owner.lookup(&rx_sk);
        if (owner)
            count_drop(*owner);
        return 0;
    }
    if (args->reason != KPOD_DROP_NO_SOCKET)
        return 0;
    int zero = 0;
    struct reset_slot *slot = reset_slot.lookup(&zero);
    if (!slot || slot->skb != (u64)args->skbaddr)
        return 0;
    slot->skb = 0;
    u8 one = 1;
    refused.update(&slot->key, &one);
    return 0;
}
