/* l7: application-protocol requests per cgroup (HTTP/1.x, DNS over UDP,
 * Redis RESP, MySQL, PostgreSQL simple query, Kafka, MongoDB OP_MSG).
 *
 * Tracepoints and their context:
 *  - sock:sock_send_length / sock:sock_recv_length (process context, the
 *    calling task, inside the syscall after the bytes moved; one program,
 *    l7_sock, attached by the agent to both, as raw tracepoints where the
 *    kernel has BTF): they fire for
 *    socket I/O only, so a read or write on a file, pipe or tty never runs
 *    this code and is never classified. First thing: the cgroup filter
 *    lookup; a pod outside the selection pays that and nothing more. Then
 *    the syscall's number and buffer argument come from the task's saved
 *    user registers (bpf_task_pt_regs): read, write, readv, writev,
 *    recvfrom, sendto, recvmsg, sendmsg, recvmmsg, sendmmsg (first message);
 *    sendfile, splice, io_uring and in-kernel senders are skipped.
 *    No syscall tracepoint is used: attaching sys_enter/sys_exit of read and
 *    write cost every process of the node on every such call (an nginx/ab
 *    pair outside the selection lost ~25% of its requests/s, docs/l7.md).
 *  - sock:inet_sock_set_state (process or softirq context): a TCP socket
 *    that is established or closed forgets its state (sk memory is reused);
 *    connect and accept remember its addresses for the topology edges,
 *    tcp:tcp_destroy_sock forgets them.
 * The first bytes moved (at most L7_HEAD) are then:
 *  - if the socket has a request pending in the other direction, parsed as
 *    that protocol's response: counts (operation, status) and the latency;
 *  - else tried against each enabled protocol's request signature; a match
 *    is remembered as pending on (sk, tag). The tag is the protocol's own
 *    request id where it has one (DNS id, Kafka correlation id, MongoDB
 *    requestID), so interleaved requests on one socket pair up; HTTP, Redis
 *    and the SQL protocols keep one request per socket, and the socket
 *    keeps its role after the response.
 * Direction: the socket that sent the request is the client's, the one that
 * received it the server's. Latency: client from the request's send to the
 * response's arrival; server from the request's arrival to the response's
 * send.
 *
 * Operations are bounded: the request's token (HTTP method, Redis command,
 * SQL verb, ...) is looked up in `l7_ops`, which the agent fills from its
 * fixed tables; a token not there is operation 0 of the protocol ("other").
 * Statuses: HTTP code (100-599), DNS rcode (4 bits), ok/error elsewhere.
 * `l7_config[0]` is the bitmask of enabled protocols: changing it needs no
 * reload. Sizes: pending requests LRU 65536 and held prefixes LRU 16384
 * (sockets close without telling: the oldest go first); l7_requests 8 and
 * l7_durations 4 entries per cgroup of KPOD_MAX_CGROUPS on average.
 *
 * Each counted request is also added to `l7_edges`, keyed like the network
 * collector's topology edges (the socket's addresses, server port and role,
 * learned at connect / accept in l7_sock_peer), so /topology names an edge's
 * protocol and requests.
 *
 * Verifier budget: l7_sock takes 367k of the 1M instructions the verifier
 * explores on kernel 6.18 (log level 1, "processed"; 525k before the edge
 * counting, whose states prune differently); the chained parsers multiply
 * its states. Moving the cgroup check after the cheap argument
 * checks took it past the limit (E2BIG): measure after any change here.
 */
#include "kpod_common.h"

#define L7_HEAD 128           /* bytes read per message */
#define L7_PREFIX 16

#define P_HTTP 1
#define P_DNS 2
#define P_REDIS 3
#define P_MYSQL 4
#define P_POSTGRES 5
#define P_KAFKA 6
#define P_MONGODB 7

#define K_BUF 0               /* (fd, buf, len) */
#define K_IOV 1               /* (fd, iovec *, n) */
#define K_MSG 2               /* (fd, msghdr *, flags) */
#define K_MMSG 3              /* (fd, mmsghdr *, n): the first message only */

#define T_NONE 0              /* tag kinds of pending requests */
#define T_DNS 1
#define T_KAFKA 2
#define T_MONGO 3

#define ST_OK 1
#define ST_ERROR 2

#define KPOD_MSG_PEEK 2
#define KPOD_AF_INET 2
#define KPOD_AF_INET6 10
#define KPOD_IPPROTO_TCP 6
#define KPOD_IPPROTO_UDP 17
#define KPOD_TCP_ESTABLISHED 1
#define KPOD_TCP_SYN_SENT 2
#define KPOD_TCP_SYN_RECV 3
#define KPOD_TCP_CLOSE 7

/* One socket transfer, as on_sock found it. */
struct call {
    u64 ts;        /* when the bytes moved */
    u64 arg;       /* buffer, iovec, msghdr or mmsghdr pointer */
    u64 sk;
    u8 kind;
    u8 sent;
    u8 l4;
    u8 pad[5];
};

struct pending_key {
    u64 sk;
    u32 tag;
    u32 kind;
};

struct pending {
    u64 start;
    u32 op;
    u8 proto;
    u8 sent;       /* this socket sent the request: the client's */
    u8 answered;   /* untagged protocols: the response was counted */
    u8 pad;
};

struct req_key {
    u64 cgid;
    u32 op;        /* proto << 16 | index in the protocol's table */
    u32 status;    /* proto << 16 | code */
    u32 proto;
    u32 role;      /* 0 client, 1 server */
};

struct dur_key {
    u64 cgid;
    u32 op;
    u32 proto;
    u32 role;
    u32 pad;
};

struct op_key {
    u32 proto;
    u32 len;
    u8 tok[16];
};

struct head {
    /* L7_PREFIX bytes for a held prefix, then the message; twice the read
     * size so that masked offsets stay inside. */
    u8 d[L7_HEAD * 2];
};

/* A short read (at most L7_PREFIX bytes) that was no message of its own:
 * servers read a length prefix first (MariaDB 4 bytes, Kafka brokers 4,
 * mongod 16), then the rest. The next read on the socket is parsed with it. */
struct prefix {
    u32 len;
    u32 pad;
    u8 b[L7_PREFIX];
};

/* Requests per topology edge: the socket's end (struct kpod_peer, as the
 * network collector keys its edges) plus the protocol, so /topology can give
 * an edge its protocol and requests. Learned at the connect / accept
 * transitions, forgotten when the socket is destroyed. */
struct l7_edge_key {
    u64 cgid;
    struct kpod_peer peer;
    u32 proto;
    u32 pad;
};

struct l7_edge_counts {
    u64 requests;
    u64 duration_ns;
};

#ifndef KPOD_MAX_EDGES
#define KPOD_MAX_EDGES 65536
#endif

BPF_ARRAY(l7_config, u32, 1);
BPF_TABLE("lru_hash", u64, struct kpod_peer, l7_sock_peer, 65536);
/* Not preallocated: memory follows the edges seen, up to the capacity. */
BPF_F_TABLE("hash", struct l7_edge_key, struct l7_edge_counts, l7_edges, KPOD_MAX_EDGES, BPF_F_NO_PREALLOC);
BPF_HASH(l7_ops, struct op_key, u32, 1024);
BPF_TABLE("lru_hash", struct pending_key, struct pending, l7_pending, 65536);
BPF_TABLE("lru_hash", u64, struct prefix, l7_prefix, 16384);
BPF_PERCPU_ARRAY(l7_head, struct head, 1);
BPF_PERCPU_ARRAY(l7_zero_hist, struct kpod_hist, 1);    /* never written: the initial histogram */
BPF_PERCPU_ARRAY(l7_opkey, struct op_key, 1);
BPF_HASH(l7_requests, struct req_key, u64, KPOD_MAX_CGROUPS * 8);
BPF_HASH(l7_durations, struct dur_key, struct kpod_hist, KPOD_MAX_CGROUPS * 4);  /* nanoseconds */

static __always_inline int kind_of(int nr, u8 *sent)
{
    if (nr == NR_read) { *sent = 0; return K_BUF; }
    if (nr == NR_write) { *sent = 1; return K_BUF; }
    if (nr == NR_recvfrom) { *sent = 0; return K_BUF; }
    if (nr == NR_sendto) { *sent = 1; return K_BUF; }
    if (nr == NR_readv) { *sent = 0; return K_IOV; }
    if (nr == NR_writev) { *sent = 1; return K_IOV; }
    if (nr == NR_recvmsg) { *sent = 0; return K_MSG; }
    if (nr == NR_sendmsg) { *sent = 1; return K_MSG; }
    if (nr == NR_recvmmsg) { *sent = 0; return K_MMSG; }
    if (nr == NR_sendmmsg) { *sent = 1; return K_MMSG; }
    return -1;
}

/* A socket's memory is reused by the next one: a new connection or a
 * closed one starts without the old role, request or held prefix. Any
 * context (softirq for a passive open): only deletes. */
static __always_inline void remember_peer(u64 sk, const u8 *local, const u8 *remote, u16 port, u8 role)
{
    struct kpod_peer peer = {};
    kpod_peer_fill(&peer, local, remote, port, role);
    l7_sock_peer.update(&sk, &peer);
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != KPOD_IPPROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    /* connect(): in the connecting process, so its cgroup is the owner's. */
    if (args->oldstate == KPOD_TCP_CLOSE && args->newstate == KPOD_TCP_SYN_SENT) {
        if (kpod_cgroup_allowed(bpf_get_current_cgroup_id()))
            remember_peer(sk, args->saddr_v6, args->daddr_v6, args->dport, KPOD_ROLE_CLIENT);
        return 0;
    }
    /* accept side (softirq): the owner is whoever then reads or writes it. */
    if (args->oldstate == KPOD_TCP_SYN_RECV && args->newstate == KPOD_TCP_ESTABLISHED)
        remember_peer(sk, args->saddr_v6, args->daddr_v6, args->sport, KPOD_ROLE_SERVER);
    if (args->newstate != KPOD_TCP_CLOSE && args->newstate != KPOD_TCP_ESTABLISHED)
        return 0;
    struct pending_key pk = {.sk = sk};
    l7_pending.delete(&pk);
    l7_prefix.delete(&sk);
    return 0;
}

/* Not at CLOSE: a client that shut down first reads the reply after it. */
TRACEPOINT_PROBE(tcp, tcp_destroy_sock)
{
    u64 sk = (u64)args->skaddr;
    l7_sock_peer.delete(&sk);
    return 0;
}

static __always_inline u32 be16(u8 *d, int i) { return ((u32)d[i] << 8) | d[i + 1]; }
static __always_inline u32 be32(u8 *d, int i)
{
    return ((u32)d[i] << 24) | ((u32)d[i + 1] << 16) | ((u32)d[i + 2] << 8) | d[i + 3];
}
static __always_inline u32 le32(u8 *d, int i)
{
    return ((u32)d[i + 3] << 24) | ((u32)d[i + 2] << 16) | ((u32)d[i + 1] << 8) | d[i];
}

/* Operation of `proto` for the token in the per-CPU op key; 0 ("other") when
 * the table does not know it. */
static __always_inline u32 lookup_op(struct op_key *k, u32 proto, u32 len)
{
    k->proto = proto;
    k->len = len;
    u32 *op = l7_ops.lookup(k);
    return op ? *op : (proto << 16);
}

static __always_inline void clear_tok(struct op_key *k)
{
    __builtin_memset(k->tok, 0, sizeof(k->tok));
}

/* Copy an ASCII word at d[start..], upper-cased, into k->tok; returns its
 * length (letters, digits, '_'; stops at anything else), up to 16. */
static __always_inline u32 copy_word(struct op_key *k, u8 *d, u32 start, u32 avail)
{
    u32 n = 0;
    clear_tok(k);
#pragma unroll
    for (int i = 0; i < 16; i++) {
        if (start + i >= avail)
            break;
        u8 ch = d[(start + i) & (L7_HEAD - 1)];
        if (ch >= 'a' && ch <= 'z')
            ch -= 32;
        else if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'))
            break;
        k->tok[i] = ch;
        n++;
    }
    return n;
}

/* ---- requests: returns 1 and sets *op (and *tag, *tkind) on a match ---- */

static __always_inline int http_request(u8 *d, u32 n, struct op_key *k, u32 *op)
{
    if (n < 16)
        return 0;
    u32 len = 0;
    clear_tok(k);
#pragma unroll
    for (int i = 0; i < 8; i++) {
        u8 ch = d[i];
        if (ch == ' ')
            break;
        if (ch < 'A' || ch > 'Z')
            return 0;
        k->tok[i] = ch;
        len++;
    }
    if (len == 0 || len >= 8 || d[len] != ' ')
        return 0;
    u8 next = d[(len + 1) & (L7_HEAD - 1)];
    if (next != '/' && next != '*' && next != 'h')
        return 0;
    /* Only methods the table knows: an unknown word is not HTTP. */
    *op = lookup_op(k, P_HTTP, len);
    return *op != (P_HTTP << 16);
}

static __always_inline int redis_request(u8 *d, u32 n, struct op_key *k, u32 *op)
{
    /* *<argc>\r\n$<len>\r\n<command>\r\n ; argc and len of 1-2 digits. */
    if (n < 10 || d[0] != '*' || d[1] < '1' || d[1] > '9')
        return 0;
    u32 i = 2;
    if (d[2] >= '0' && d[2] <= '9')
        i = 3;
    if (d[i] != '\r' || d[i + 1] != '\n' || d[i + 2] != '$')
        return 0;
    i += 3;
    u32 cmdlen = 0;
    if (d[i] < '1' || d[i] > '9')
        return 0;
    cmdlen = d[i] - '0';
    i++;
    if (d[i] >= '0' && d[i] <= '9') {
        cmdlen = cmdlen * 10 + (d[i] - '0');
        i++;
    }
    if (d[i] != '\r' || d[i + 1] != '\n')
        return 0;
    i += 2;
    u32 len = copy_word(k, d, i, n);
    if (len != cmdlen)
        len = 0xffff;  /* longer than 16 or odd bytes: other */
    *op = lookup_op(k, P_REDIS, len);
    return 1;
}

static __always_inline int sql_verb(u8 *d, u32 start, u32 n, struct op_key *k, u32 proto)
{
    /* Leading blanks and an opening parenthesis skipped. */
    u32 s = start;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        u8 ch = d[s & (L7_HEAD - 1)];
        if (s < n && (ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r' || ch == '('))
            s++;
    }
    u32 len = copy_word(k, d, s, n);
    return lookup_op(k, proto, len);
}

static __always_inline int mysql_request(u8 *d, u32 n, u32 total, struct op_key *k, u32 *op)
{
    if (n < 5 || d[3] != 0)
        return 0;
    u32 plen = d[0] | ((u32)d[1] << 8) | ((u32)d[2] << 16);
    if (plen + 4 != total)
        return 0;
    u8 cmd = d[4];
    if (cmd == 0x03 || cmd == 0x16) {          /* COM_QUERY, COM_STMT_PREPARE */
        *op = sql_verb(d, 5, n, k, P_MYSQL);
        return 1;
    }
    if (cmd == 0x17 || cmd == 0x0e || cmd == 0x02) {  /* STMT_EXECUTE, PING, INIT_DB */
        clear_tok(k);
        k->tok[0] = '#';
        k->tok[1] = cmd;
        *op = lookup_op(k, P_MYSQL, 2);
        return 1;
    }
    return 0;
}

static __always_inline int postgres_request(u8 *d, u32 n, u32 total, struct op_key *k, u32 *op)
{
    if (n < 6 || d[0] != 'Q' || be32(d, 1) + 1 != total)
        return 0;
    *op = sql_verb(d, 5, n, k, P_POSTGRES);
    return 1;
}

static __always_inline int kafka_request(u8 *d, u32 n, u32 total, struct op_key *k, u32 *op, u32 *tag)
{
    if (n < 14 || be32(d, 0) + 4 != total)
        return 0;
    u32 api = be16(d, 4), version = be16(d, 6);
    u32 client_len = be16(d, 12);
    if (api > 200 || version > 40 || (client_len != 0xffff && client_len + 14 > total))
        return 0;
    clear_tok(k);
    k->tok[0] = '#';
    k->tok[1] = api;
    *op = lookup_op(k, P_KAFKA, 2);
    *tag = be32(d, 8);
    return 1;
}

static __always_inline int mongo_request(u8 *d, u32 n, u32 total, struct op_key *k, u32 *op, u32 *tag)
{
    /* OP_MSG: header(16) flagBits(4) kind 0 section: BSON doc, first key = command. */
    if (n < 27 || le32(d, 0) != total || le32(d, 8) != 0 || le32(d, 12) != 2013 || d[20] != 0)
        return 0;
    u32 len = copy_word(k, d, 26, n);
    if (d[(26 + len) & (L7_HEAD - 1)] != 0)
        len = 0xffff;
    *op = lookup_op(k, P_MONGODB, len);
    *tag = le32(d, 4);
    return 1;
}

static __always_inline int dns_request(u8 *d, u32 n, struct op_key *k, u32 *op, u32 *tag)
{
    if (n < 17 || (d[2] & 0x80) || (d[2] & 0x78) || be16(d, 4) != 1)
        return 0;
    u32 pos = 12;
    /* Up to 20 labels: a longer name is not counted. */
#pragma unroll
    for (int i = 0; i < 20; i++) {
        u8 l = d[pos & (L7_HEAD - 1)];
        if (l == 0)
            break;
        if (l > 63)
            return 0;
        pos += l + 1;
        if (pos + 5 > n)
            return 0;
    }
    if (d[pos & (L7_HEAD - 1)] != 0 || pos + 5 > n)
        return 0;
    u32 qtype = be16(d, (pos + 1) & (L7_HEAD - 1));
    clear_tok(k);
    k->tok[0] = '#';
    k->tok[1] = qtype >> 8;
    k->tok[2] = qtype & 0xff;
    *op = lookup_op(k, P_DNS, 3);
    *tag = be16(d, 0);
    return 1;
}

/* ---- responses: the status code of `proto`, or -1 if these bytes are not one ---- */

static __always_inline int response_status(u8 proto, u8 *d, u32 n)
{
    if (proto == P_HTTP) {
        if (n < 12 || d[0] != 'H' || d[1] != 'T' || d[2] != 'T' || d[3] != 'P' || d[4] != '/' || d[8] != ' ')
            return -1;
        if (d[9] < '1' || d[9] > '5' || d[10] < '0' || d[10] > '9' || d[11] < '0' || d[11] > '9')
            return 0;
        return (d[9] - '0') * 100 + (d[10] - '0') * 10 + (d[11] - '0');
    }
    if (proto == P_REDIS) {
        u8 c = d[0];
        if (c == '-' || c == '!')
            return ST_ERROR;
        if (c == '+' || c == ':' || c == '$' || c == '*' || c == '_' || c == ',' || c == '#' || c == '%' ||
            c == '~' || c == '=' || c == '(' || c == '|' || c == '>')
            return ST_OK;
        return -1;
    }
    if (proto == P_MYSQL) {
        if (n < 5 || d[3] == 0)
            return -1;
        return d[4] == 0xff ? ST_ERROR : ST_OK;
    }
    if (proto == P_POSTGRES) {
        if (n < 5)
            return -1;
        if (d[0] == 'E')
            return ST_ERROR;
        return (d[0] >= 'A' && d[0] <= 'Z') || d[0] == '1' || d[0] == '2' ? ST_OK : -1;
    }
    if (proto == P_DNS)
        return d[3] & 0x0f;
    if (proto == P_MONGODB) {
        /* Error replies put {ok: 0.0} first; success replies carry ok: 1 last. */
        if (n >= 37 && d[20] == 0 && d[25] == 0x01 && d[26] == 'o' && d[27] == 'k' && d[28] == 0) {
            u64 bits = 0;
#pragma unroll
            for (int i = 0; i < 8; i++)
                bits |= (u64)d[29 + i] << (8 * i);
            if (bits == 0 || bits == 0x8000000000000000ULL)
                return ST_ERROR;
        }
        return ST_OK;
    }
    return ST_OK;   /* Kafka: the error code sits at a per-API offset */
}

static __always_inline void count_edge(u64 cgid, u64 sk, u32 proto, u64 duration)
{
    struct kpod_peer *peer = l7_sock_peer.lookup(&sk);
    if (!peer)
        return;   /* UDP, or a connection older than the collector */
    struct l7_edge_key ek = {.cgid = cgid, .proto = proto};
    __builtin_memcpy(&ek.peer, peer, sizeof(ek.peer));
    struct l7_edge_counts zero = {};
    struct l7_edge_counts *e = l7_edges.lookup_or_try_init(&ek, &zero);
    if (!e) {
        kpod_map_full(KPOD_ERR_l7_edges);
        return;
    }
    __sync_fetch_and_add(&e->requests, 1);
    __sync_fetch_and_add(&e->duration_ns, duration);
}

static __always_inline void count(u64 cgid, u64 sk, struct pending *p, int status, u64 now, u8 sent_now)
{
    struct req_key rk = {.cgid = cgid, .op = p->op, .status = ((u32)p->proto << 16) | (u32)status,
                         .proto = p->proto, .role = p->sent ? 0 : 1};
    u64 zero = 0;
    u64 *c = l7_requests.lookup_or_try_init(&rk, &zero);
    if (c)
        __sync_fetch_and_add(c, 1);
    else
        kpod_map_full(KPOD_ERR_l7_requests);
    struct dur_key dk = {.cgid = cgid, .op = p->op, .proto = p->proto, .role = rk.role};
    int zero_idx = 0;
    struct kpod_hist *empty = l7_zero_hist.lookup(&zero_idx);   /* off the 512-byte stack */
    if (!empty)
        return;
    u64 duration = now > p->start ? now - p->start : 0;
    struct kpod_hist *h = l7_durations.lookup_or_try_init(&dk, empty);
    if (h)
        kpod_hist_add(h, duration);
    else
        kpod_map_full(KPOD_ERR_l7_durations);
    count_edge(cgid, sk, p->proto, duration);
}

/* The response of a tagged request (DNS, Kafka, MongoDB): its id is unique
 * on the socket, so the entry goes once answered. */
static __always_inline int try_response(struct pending_key *pk, u8 sent, u8 *d, u32 n, u64 cgid, u64 now)
{
    struct pending *p = l7_pending.lookup(pk);
    if (!p || p->sent == sent)
        return 0;
    int status = response_status(p->proto, d, n);
    if (status < 0)
        return 0;
    struct pending copy = *p;
    l7_pending.delete(pk);
    count(cgid, pk->sk, &copy, status, now, sent);
    return 1;
}

/* 1 when the bytes were a request or a response. */
static __always_inline int on_message(struct call *c, u8 *d, u32 n, u32 total, u32 enabled)
{
    u64 now = c->ts;
    u64 cgid = bpf_get_current_cgroup_id();
    struct pending_key pk = {.sk = c->sk};
    struct pending *known = 0;
    if (c->l4 == KPOD_IPPROTO_UDP) {
        if (!(enabled & (1 << P_DNS)) || n < 12)
            return 0;
        if (d[2] & 0x80) {
            pk.tag = be16(d, 0);
            pk.kind = T_DNS;
            return try_response(&pk, c->sent, d, n, cgid, now);
        }
    } else {
        /* One lookup per transfer for HTTP, Redis and SQL: the socket's
         * request, kept after its response (answered) as the socket's role. */
        known = l7_pending.lookup(&pk);
        if (known && known->sent != c->sent) {
            if (!known->answered) {
                int status = response_status(known->proto, d, n);
                if (status >= 0) {
                    struct pending copy = *known;
                    known->answered = 1;
                    count(cgid, c->sk, &copy, status, now, c->sent);
                    return 1;
                }
            }
            /* What moves in the response's direction is never a request
             * (a Redis array reply looks like a command). */
            return 0;
        }
        /* Kafka sizes and MongoDB lengths are below 16 MiB: a first byte 0. */
        if ((enabled & (1 << P_KAFKA)) && n >= 8 && d[0] == 0) {
            pk.tag = be32(d, 4);
            pk.kind = T_KAFKA;
            if (try_response(&pk, c->sent, d, n, cgid, now))
                return 1;
        }
        if ((enabled & (1 << P_MONGODB)) && n >= 16 && d[3] == 0 && le32(d, 12) == 2013 && le32(d, 0) == total) {
            pk.tag = le32(d, 8);
            pk.kind = T_MONGO;
            if (try_response(&pk, c->sent, d, n, cgid, now))
                return 1;
        }
    }
    int zero = 0;
    struct op_key *k = l7_opkey.lookup(&zero);
    if (!k)
        return 0;
    u32 op = 0, tag = 0, tkind = T_NONE;
    u8 proto = 0;
    if (c->l4 == KPOD_IPPROTO_UDP) {
        if (dns_request(d, n, k, &op, &tag)) {
            proto = P_DNS;
            tkind = T_DNS;
        }
    } else if ((enabled & (1 << P_HTTP)) && http_request(d, n, k, &op)) {
        proto = P_HTTP;
    } else if ((enabled & (1 << P_REDIS)) && redis_request(d, n, k, &op)) {
        proto = P_REDIS;
    } else if ((enabled & (1 << P_POSTGRES)) && postgres_request(d, n, total, k, &op)) {
        proto = P_POSTGRES;
    } else if ((enabled & (1 << P_MONGODB)) && mongo_request(d, n, total, k, &op, &tag)) {
        proto = P_MONGODB;
        tkind = T_MONGO;
    } else if ((enabled & (1 << P_KAFKA)) && kafka_request(d, n, total, k, &op, &tag)) {
        proto = P_KAFKA;
        tkind = T_KAFKA;
    } else if ((enabled & (1 << P_MYSQL)) && mysql_request(d, n, total, k, &op)) {
        proto = P_MYSQL;
    }
    if (!proto)
        return 0;
    if (known && tkind == T_NONE) {
        /* The socket's next request, written in place: an LRU update
         * allocates a new element and frees the old one each time. */
        known->start = c->ts;
        known->op = op;
        known->proto = proto;
        known->answered = 0;
        return 1;
    }
    pk.tag = tag;
    pk.kind = tkind;
    /* Client: from the request's send; server: from its arrival. */
    struct pending p = {.start = c->ts, .op = op, .proto = proto, .sent = c->sent};
    l7_pending.update(&pk, &p);
    return 1;
}

/* A read of just a header that announces the rest: kept as a prefix for
 * the socket's next read. Anything else that small (a body's tail, a
 * one-byte SSL refusal) must not be glued to the next message. */
static __always_inline int length_prefix(struct call *c, u8 *d, u32 n, u32 enabled)
{
    if (n == 4) {
        /* MySQL: 3-byte length, sequence 0 for a command, >0 for a reply
         * to a command this socket sent. */
        if (enabled & (1 << P_MYSQL)) {
            if (d[3] == 0)
                return 1;
            struct pending_key pk = {.sk = c->sk};
            struct pending *p = l7_pending.lookup(&pk);
            if (p && p->proto == P_MYSQL && p->sent)
                return 1;
        }
        /* Kafka: a broker reads the request's 4-byte size first. */
        if ((enabled & (1 << P_KAFKA)) && d[0] == 0)
            return 1;
        return 0;
    }
    /* MongoDB: mongod reads the 16-byte message header first. */
    return n == 16 && (enabled & (1 << P_MONGODB)) && le32(d, 12) == 2013;
}

struct iovec_user {
    u64 base;
    u64 len;
};

/* The user's task registers at syscall entry: the call's number and
 * arguments, read where the sock tracepoints fire (inside the call). */
struct pt_regs;
static struct pt_regs *(*kpod_task_pt_regs)(void *task) = (void *)175;  /* BPF_FUNC_task_pt_regs */
/* Offsets in struct pt_regs (the ptrace ABI, stable) of the syscall's
 * second argument and number; the agent passes them per architecture. */
#ifndef REGS_ARG1
#define REGS_ARG1 104      /* x86_64: si */
#endif
#ifndef REGS_NR
#define REGS_NR 120        /* x86_64: orig_ax */
#endif

/* The caller has checked the cgroup filter (first, so a pod outside the
 * selection pays that lookup and nothing more). */
static __always_inline void on_sock(void *sk, u16 family, u16 protocol, int ret, int flags)
{
    if (ret <= 0 || (flags & KPOD_MSG_PEEK))
        return;
    if (family != KPOD_AF_INET && family != KPOD_AF_INET6)
        return;
    if (protocol != KPOD_IPPROTO_TCP && protocol != KPOD_IPPROTO_UDP)
        return;
    int zero = 0;
    u32 *enabled = l7_config.lookup(&zero);
    if (!enabled || !*enabled)
        return;
    void *regs = (void *)kpod_task_pt_regs((void *)bpf_get_current_task_btf());
    s32 nr = -1;
    u64 arg = 0;
    if (!regs || bpf_probe_read_kernel(&nr, sizeof(nr), regs + REGS_NR) ||
        bpf_probe_read_kernel(&arg, sizeof(arg), regs + REGS_ARG1))
        return;
    struct call c = {.ts = bpf_ktime_get_ns(), .arg = arg, .sk = (u64)sk, .l4 = protocol};
    int kind = kind_of(nr, &c.sent);
    /* sendfile, splice, io_uring, in-kernel senders: not ours to parse. */
    if (kind < 0)
        return;
    c.kind = kind;
    u64 ptr = c.arg;
    u64 total = (u64)ret;          /* bytes of the message (this one, for mmsg) */
    u64 first = total;             /* of which in the first buffer */
    if (c.kind != K_BUF) {
        u64 iov = c.arg;
        if (c.kind == K_MSG || c.kind == K_MMSG) {
            /* struct msghdr: msg_iov at offset 16; mmsghdr.msg_len at 56. */
            if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(c.arg + 16)))
                return;
        }
        struct iovec_user v = {};
        if (bpf_probe_read_user(&v, sizeof(v), (void *)iov))
            return;
        ptr = v.base;
        if (v.len < first)
            first = v.len;   /* only the first iovec is read */
    }
    u32 n = first < L7_HEAD ? (u32)first : L7_HEAD;
    struct head *h = l7_head.lookup(&zero);
    if (!h)
        return;
    __builtin_memset(h->d, 0, L7_PREFIX + L7_HEAD);
    if (n == 0 || n > L7_HEAD || bpf_probe_read_user(h->d + L7_PREFIX, n, (void *)ptr))
        return;
    u32 plen = 0;
    if (!c.sent && c.l4 == KPOD_IPPROTO_TCP) {
        struct prefix *pf = l7_prefix.lookup(&c.sk);
        if (pf) {
            plen = pf->len;
            if (plen > L7_PREFIX)
                plen = L7_PREFIX;
            /* Just before the message: d below starts at it. */
            if (plen > 0 && bpf_probe_read_kernel(h->d + (L7_PREFIX - plen), plen, pf->b))
                plen = 0;
            l7_prefix.delete(&c.sk);
        }
    }
    if (total > 0x7fffffffULL)
        total = 0x7fffffffULL;
    u8 *d = h->d + (L7_PREFIX - plen);
    u32 m = n + plen;
    if (m > L7_HEAD)
        m = L7_HEAD;
    int done = on_message(&c, d, m, (u32)total + plen, *enabled);
    if (!done && !plen && !c.sent && c.l4 == KPOD_IPPROTO_TCP && first == total &&
        length_prefix(&c, h->d + L7_PREFIX, (u32)total, *enabled)) {
        struct prefix pf = {.len = (u32)total};
        __builtin_memcpy(pf.b, h->d + L7_PREFIX, L7_PREFIX);
        l7_prefix.update(&c.sk, &pf);
    }
}

/* sock_send_length and sock_recv_length: one program (verified once) serves
 * both, the syscall says the direction.
 *
 * As raw tracepoints when the agent found this kernel's struct sock offsets
 * in its BTF (-DSK_FAMILY_OFFSET, -DSK_PROTOCOL_OFFSET): the perf-event form
 * fills a trace record before the program runs, and for a pod outside the
 * selection, whose transfers meet only the cgroup lookup, that dispatch was
 * most of the cost. A raw tracepoint passes TP_PROTO(struct sock *sk, int
 * ret, int flags); family and protocol are read from the socket, after the
 * cgroup check. Without BTF, the tracepoints' own record. */
#ifdef SK_PROTOCOL_OFFSET
int l7_sock(struct bpf_raw_tracepoint_args *ctx)
{
    if (!kpod_cgroup_allowed(bpf_get_current_cgroup_id()))
        return 0;
    void *sk = (void *)ctx->args[0];
    u16 family = 0, protocol = 0;
    if (bpf_probe_read_kernel(&family, sizeof(family), sk + SK_FAMILY_OFFSET) ||
        bpf_probe_read_kernel(&protocol, sizeof(protocol), sk + SK_PROTOCOL_OFFSET))
        return 0;
    on_sock(sk, family, protocol, (int)ctx->args[1], (int)ctx->args[2]);
    return 0;
}
#else
struct sock_length_record {
    u64 common;
    void *sk;
    u16 family;
    u16 protocol;
    int ret;
    int flags;
};

int l7_sock(struct sock_length_record *args)
{
    if (!kpod_cgroup_allowed(bpf_get_current_cgroup_id()))
        return 0;
    on_sock(args->sk, args->family, args->protocol, args->ret, args->flags);
    return 0;
}
#endif
