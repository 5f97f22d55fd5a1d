/* network: TCP bytes, connections, retransmits, RTT and connect latency per cgroup.
 *
 * Tracepoints and their context:
 *  - sock:sock_send_length / sock:sock_recv_length: process context, after
 *    sendmsg/recvmsg returned; exact byte counts (MSG_PEEK reads skipped).
 *    They also remember socket -> cgroup for the events below.
 *  - sock:inet_sock_set_state: CLOSE->SYN_SENT is in the connecting process
 *    (counts an active connection, starts the connect clock);
 *    SYN_SENT->ESTABLISHED runs in softirq (charged through the socket map).
 *    SYN_RECV->ESTABLISHED (a passive open, softirq) marks the new socket;
 *    the connection is counted for the pod whose process first sends or
 *    receives on it. No syscall tracepoint is used: attaching one makes every
 *    syscall on the node take the slow tracing path.
 *  - tcp:tcp_destroy_sock: the socket is gone; its peer addresses are dropped.
 *  - tcp:tcp_retransmit_skb, tcp:tcp_probe: softirq or timer context, where
 *    the current cgroup is not the socket owner's: charged through sock_owner.
 *
 * sock_owner is LRU: sockets close without telling us, and a bounded map
 * forgets the oldest; a socket it forgot is re-learned at its next send/recv.
 *
 * Topology: sock_peer remembers each socket's two addresses and the server
 * port when its state changes (SYN_SENT: a client, whose source port is not
 * chosen yet; SYN_RECV->ESTABLISHED: a server). tcp_edges then counts per
 * (owner cgroup, local address, remote address, server port, role):
 * established connections, bytes each way, retransmits and the smoothed RTT.
 * Client ports are left out of the key: every connection of a pod to one
 * server port is one entry. The agent deletes entries it evicts from its
 * own bounded edge table (topology.maxEdges). Sockets opened before the
 * program loaded have no peer and are not in the topology.
 */
#include "kpod_common.h"

#define KPOD_AF_INET 2
#define KPOD_AF_INET6 10
#define KPOD_IPPROTO_TCP 6
#define KPOD_MSG_PEEK 2
#define KPOD_TCP_ESTABLISHED 1
#define KPOD_TCP_SYN_SENT 2
#define KPOD_TCP_SYN_RECV 3
#define KPOD_TCP_CLOSE 7


#ifndef KPOD_MAX_EDGES
#define KPOD_MAX_EDGES 16384
#endif

struct tcp_counts {
    u64 bytes_sent;
    u64 bytes_received;
    u64 retransmits;
    u64 connections;
};

BPF_TABLE("lru_hash", u64, u64, sock_owner, 65536);
BPF_TABLE("lru_hash", u64, u64, connect_start, 16384);
BPF_TABLE("lru_hash", u64, u8, passive_open, 16384);
BPF_HASH(tcp_counts, u64, struct tcp_counts, KPOD_MAX_CGROUPS);

struct edge_key {
    u64 cgid;
    struct kpod_peer peer;
};

struct edge_counts {
    u64 connections;
    u64 bytes_sent;
    u64 bytes_received;
    u64 retransmits;
    struct kpod_hist rtt;   /* microseconds */
};

BPF_TABLE("lru_hash", u64, struct kpod_peer, sock_peer, 65536);
/* Never written: the zero value of a new edge (too big for the BPF stack). */
BPF_ARRAY(edge_zero, struct edge_counts, 1);
/* Not preallocated: memory follows the edges seen, up to the capacity. */
BPF_F_TABLE("hash", struct edge_key, struct edge_counts, tcp_edges, KPOD_MAX_EDGES, BPF_F_NO_PREALLOC);
BPF_HASH(tcp_rtt, u64, struct kpod_hist, KPOD_MAX_CGROUPS);             /* microseconds */
BPF_HASH(tcp_connect_latency, u64, struct kpod_hist, KPOD_MAX_CGROUPS); /* nanoseconds */

static __always_inline struct tcp_counts *counts_for(u64 cgid)
{
    struct tcp_counts zero = {};
    struct tcp_counts *c = tcp_counts.lookup_or_try_init(&cgid, &zero);
    if (!c)
        kpod_map_full(KPOD_ERR_tcp_counts);
    return c;
}

static __always_inline struct edge_counts *edge_for(u64 cgid, u64 sk)
{
#ifdef KPOD_NO_EDGES  /* bench/bench_topology.py: the program without the topology */
    return 0;
#endif
    struct kpod_peer *peer = sock_peer.lookup(&sk);
    if (!peer)
        return 0;
    struct edge_key key = {};
    key.cgid = cgid;
    __builtin_memcpy(&key.peer, peer, sizeof(key.peer));
    int index = 0;
    struct edge_counts *zero = edge_zero.lookup(&index);
    if (!zero)
        return 0;
    struct edge_counts *e = tcp_edges.lookup_or_try_init(&key, zero);
    if (!e)
        kpod_map_full(KPOD_ERR_tcp_edges);
    return e;
}

static __always_inline void remember_peer(u64 sk, const u8 *local, const u8 *remote, u16 port, u8 role)
{
#ifdef KPOD_NO_EDGES
    return;
#endif
    struct kpod_peer peer = {};
    kpod_peer_fill(&peer, local, remote, port, role);
    sock_peer.update(&sk, &peer);
}

static __always_inline int is_tcp(u16 family, u16 protocol)
{
    return protocol == KPOD_IPPROTO_TCP && (family == KPOD_AF_INET || family == KPOD_AF_INET6);
}

static __always_inline void on_transfer(u64 sk, u16 family, u16 protocol, int ret, int sent)
{
    if (!is_tcp(family, protocol))
        return;
    u64 cgid = bpf_get_current_cgroup_id();
    if (!kpod_cgroup_allowed(cgid))
        return;
    u64 *owner = sock_owner.lookup(&sk);
    if (!owner || *owner != cgid)
        sock_owner.update(&sk, &cgid);
    struct tcp_counts *c = counts_for(cgid);
    if (!c)
        return;
    struct edge_counts *e = edge_for(cgid, sk);
    if (!owner && passive_open.lookup(&sk)) {
        passive_open.delete(&sk);
        __sync_fetch_and_add(&c->connections, 1);
        if (e)
            __sync_fetch_and_add(&e->connections, 1);
    }
    if (ret <= 0)
        return;
    if (sent) {
        __sync_fetch_and_add(&c->bytes_sent, (u64)ret);
        if (e)
            __sync_fetch_and_add(&e->bytes_sent, (u64)ret);
    } else {
        __sync_fetch_and_add(&c->bytes_received, (u64)ret);
        if (e)
            __sync_fetch_and_add(&e->bytes_received, (u64)ret);
    }
}

TRACEPOINT_PROBE(sock, sock_send_length)
{
    on_transfer((u64)args->sk, args->family, args->protocol, args->ret, 1);
    return 0;
}

TRACEPOINT_PROBE(sock, sock_recv_length)
{
    if (args->flags & KPOD_MSG_PEEK)
        return 0;
    on_transfer((u64)args->sk, args->family, args->protocol, args->ret, 0);
    return 0;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != KPOD_IPPROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->oldstate == KPOD_TCP_CLOSE && args->newstate == KPOD_TCP_SYN_SENT) {
        u64 cgid = bpf_get_current_cgroup_id();
        if (!kpod_cgroup_allowed(cgid))
            return 0;
        sock_owner.update(&sk, &cgid);
        remember_peer(sk, args->saddr_v6, args->daddr_v6, args->dport, KPOD_ROLE_CLIENT);
        u64 now = bpf_ktime_get_ns();
        connect_start.update(&sk, &now);
        struct tcp_counts *c = counts_for(cgid);
        if (c)
            __sync_fetch_and_add(&c->connections, 1);
        return 0;
    }
    if (args->oldstate == KPOD_TCP_SYN_SENT) {
        u64 *start = connect_start.lookup(&sk);
        if (!start)
            return 0;
        u64 delta = bpf_ktime_get_ns() - *start;
        connect_start.delete(&sk);
        if (args->newstate != KPOD_TCP_ESTABLISHED)
            return 0;
        u64 *owner = sock_owner.lookup(&sk);
        if (!owner)
            return 0;
        u64 cgid = *owner;
        struct edge_counts *e = edge_for(cgid, sk);
        if (e)
            __sync_fetch_and_add(&e->connections, 1);
        struct kpod_hist empty = {};
        struct kpod_hist *h = tcp_connect_latency.lookup_or_try_init(&cgid, &empty);
        if (h)
            kpod_hist_add(h, delta);
        else
            kpod_map_full(KPOD_ERR_tcp_connect_latency);
        return 0;
    }
    if (args->oldstate == KPOD_TCP_SYN_RECV && args->newstate == KPOD_TCP_ESTABLISHED) {
        u8 one = 1;
        /* A new socket: an owner remembered at this address is a dead socket's. */
        sock_owner.delete(&sk);
        passive_open.update(&sk, &one);
        remember_peer(sk, args->saddr_v6, args->daddr_v6, args->sport, KPOD_ROLE_SERVER);
        return 0;
    }
    if (args->newstate == KPOD_TCP_CLOSE) {
        sock_owner.delete(&sk);
        passive_open.delete(&sk);
    }
    return 0;
}

/* A socket reaches CLOSE before its owner has read everything (a client
 * that shut down first goes to TIME_WAIT through CLOSE when the server's FIN
 * arrives, and its last reads re-learn the owner): what we know of it is
 * forgotten when it is destroyed, so a new socket at the same address never
 * inherits an owner or peer. */
TRACEPOINT_PROBE(tcp, tcp_destroy_sock)
{
    u64 sk = (u64)args->skaddr;
    sock_peer.delete(&sk);
    sock_owner.delete(&sk);
    passive_open.delete(&sk);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    u64 sk = (u64)args->skaddr;
    u64 *owner = sock_owner.lookup(&sk);
    if (!owner)
        return 0;
    struct tcp_counts *c = counts_for(*owner);
    if (c)
        __sync_fetch_and_add(&c->retransmits, 1);
    struct edge_counts *e = edge_for(*owner, sk);
    if (e)
        __sync_fetch_and_add(&e->retransmits, 1);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_probe)
{
    u64 sk = (u64)args->skaddr;
    u64 *owner = sock_owner.lookup(&sk);
    if (!owner || args->srtt == 0)
        return 0;
    u64 cgid = *owner;
    struct kpod_hist empty = {};
    struct kpod_hist *h = tcp_rtt.lookup_or_try_init(&cgid, &empty);
    if (h)
        kpod_hist_add(h, args->srtt);
    else
        kpod_map_full(KPOD_ERR_tcp_rtt);
    struct edge_counts *e = edge_for(cgid, sk);
    if (e)
        kpod_hist_add(&e->rtt, args->srtt);
    return 0;
}
