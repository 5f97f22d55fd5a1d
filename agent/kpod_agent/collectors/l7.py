"""l7: application-protocol requests per pod, by protocol, direction,
operation and status, with their latency (bpf/l7.c).

Programs on the sock send/recv tracepoints only: they fire for socket I/O
and nothing else, and read the calling syscall's buffer argument from the
task's registers. Per-syscall tracepoints on read/write cost every process
of the node on every call (measured in docs/l7.md). The operation and status labels come from the fixed
tables below: the BPF side looks a request's token (HTTP method, Redis
command, SQL verb, ...) up in `l7_ops`, filled from these tables at attach,
so a token not in a table is the protocol's "other" and the series per pod
stay bounded. The enabled protocols are a bitmask in `l7_config`: changing
`collectors.l7.protocols` rewrites it in place.
"""
from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Iterable
from typing import Any

from kpod_agent import btf, topology
from kpod_agent.collectors.base import BpfCollector, CgroupTarget, CollectorError, MetricSpec, Snapshot
from kpod_agent.collectors.network import edge_key
from kpod_agent.config import L7_PROTOCOLS, AgentConfig, machine_arch, syscall_numbers

# Protocol numbers of bpf/l7.c (P_HTTP ...): the order of config.L7_PROTOCOLS, from 1.
PROTOCOL_IDS: dict[str, int] = {name: i for i, name in enumerate(L7_PROTOCOLS, start=1)}
OTHER = "other"

# The syscalls whose buffers are read: what the clients and servers of the
# tests use (strace: curl and http.server sendto/recvfrom, nginx writev,
# redis read/write, dig sendmmsg/recvmsg, dnsmasq sendmsg/recvmsg).
SYSCALLS = ("read", "write", "readv", "writev", "recvfrom", "sendto",
            "recvmsg", "sendmsg", "recvmmsg", "sendmmsg")

# Where l7_sock runs: socket transfers, whichever syscall made them.
log = logging.getLogger(__name__)

SOCK_TRACEPOINTS = ("sock:sock_send_length", "sock:sock_recv_length")

# struct pt_regs offsets (ptrace ABI) of a syscall's second argument and of
# its number: x86_64 si and orig_ax; arm64 regs[1] and syscallno.
PT_REGS = {"x86_64": (104, 120), "aarch64": (8, 280)}

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "CONNECT", "TRACE")
DNS_TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
             33: "SRV", 35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 255: "ANY", 257: "CAA"}
DNS_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
              6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}
REDIS_COMMANDS = (
    "GET", "SET", "SETEX", "SETNX", "GETSET", "MGET", "MSET", "DEL", "UNLINK", "EXISTS", "EXPIRE", "PEXPIRE",
    "TTL", "PTTL", "INCR", "INCRBY", "DECR", "DECRBY", "APPEND", "STRLEN", "KEYS", "SCAN", "TYPE",
    "HGET", "HSET", "HMGET", "HMSET", "HDEL", "HGETALL", "HINCRBY", "HEXISTS", "HLEN", "HKEYS", "HVALS", "HSCAN",
    "LPUSH", "RPUSH", "LPOP", "RPOP", "LRANGE", "LLEN", "LINDEX", "LREM", "LTRIM", "BLPOP", "BRPOP",
    "SADD", "SREM", "SMEMBERS", "SISMEMBER", "SCARD", "SPOP", "SSCAN",
    "ZADD", "ZREM", "ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZSCORE", "ZCARD", "ZINCRBY", "ZRANK", "ZSCAN",
    "PUBLISH", "SUBSCRIBE", "PSUBSCRIBE", "MULTI", "EXEC", "DISCARD", "WATCH", "EVAL", "EVALSHA",
    "PING", "ECHO", "AUTH", "HELLO", "SELECT", "INFO", "CONFIG", "CLIENT", "COMMAND", "DBSIZE", "FLUSHDB",
    "FLUSHALL", "XADD", "XREAD", "XRANGE", "XLEN", "XACK", "XREADGROUP",
)
SQL_VERBS = (
    "SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "UPSERT", "MERGE", "WITH", "VALUES",
    "BEGIN", "START", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
    "CREATE", "DROP", "ALTER", "TRUNCATE", "RENAME", "GRANT", "REVOKE",
    "SET", "SHOW", "USE", "DESCRIBE", "EXPLAIN", "ANALYZE", "CALL", "DO", "LOCK", "UNLOCK",
    "PREPARE", "EXECUTE", "DEALLOCATE", "DECLARE", "FETCH", "CLOSE", "COPY", "VACUUM", "LISTEN", "NOTIFY",
    "DISCARD", "RESET",
)
# MySQL commands other than a query: command byte -> operation.
MYSQL_COMMANDS = {0x02: "USE", 0x0E: "PING", 0x17: "EXECUTE"}
KAFKA_APIS = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit", 9: "OffsetFetch",
    10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup",
    15: "DescribeGroups", 16: "ListGroups", 17: "SaslHandshake", 18: "ApiVersions", 19: "CreateTopics",
    20: "DeleteTopics", 22: "InitProducerId", 32: "DescribeConfigs", 36: "SaslAuthenticate",
    60: "DescribeCluster",
}
MONGODB_COMMANDS = (
    "find", "insert", "update", "delete", "aggregate", "count", "distinct", "getMore", "killCursors",
    "findAndModify", "createIndexes", "dropIndexes", "listIndexes", "listCollections", "listDatabases",
    "create", "drop", "dropDatabase", "hello", "isMaster", "ismaster", "ping", "buildInfo", "endSessions",
    "saslStart", "saslContinue", "getLastError", "serverStatus", "abortTransaction", "commitTransaction",
)


def protocol_name(proto: int) -> str:
    """Protocol number (bpf/l7.c, `PROTOCOL_IDS`) -> the `protocol` label;
    also what a topology edge can be labelled with."""
    return L7_PROTOCOLS[proto - 1] if 1 <= proto <= len(L7_PROTOCOLS) else OTHER


def _word(text: str) -> tuple[bytes, int]:
    return text.upper().encode(), len(text)


def _number(value: int, width: int) -> tuple[bytes, int]:
    """A numeric operation as the BPF side writes its token: '#' then the
    value's bytes, big-endian."""
    return b"#" + value.to_bytes(width, "big"), 1 + width


@functools.cache
def operation_table() -> dict[tuple[int, bytes, int], tuple[int, str]]:
    """(protocol number, token, token length) -> (op id, operation label).
    An op id is protocol << 16 | index, index 0 being "other"."""
    names: dict[str, list[tuple[tuple[bytes, int], str]]] = {
        "http": [(_word(m), m) for m in HTTP_METHODS],
        "dns": [(_number(t, 2), n) for t, n in DNS_TYPES.items()],
        "redis": [(_word(c), c) for c in REDIS_COMMANDS],
        "mysql": [(_word(v), v) for v in SQL_VERBS] + [(_number(c, 1), n) for c, n in MYSQL_COMMANDS.items()],
        "postgres": [(_word(v), v) for v in SQL_VERBS],
        "kafka": [(_number(a, 1), n) for a, n in KAFKA_APIS.items()],
        "mongodb": [(_word(c), c) for c in MONGODB_COMMANDS],
    }
    table: dict[tuple[int, bytes, int], tuple[int, str]] = {}
    for proto, entries in names.items():
        pid = PROTOCOL_IDS[proto]
        labels: dict[str, int] = {}
        for (token, length), label in entries:
            # Tokens are upper-cased in BPF: isMaster and ismaster are one key.
            if (pid, token, length) in table:
                continue
            index = labels.setdefault(label, len(labels) + 1)
            table[(pid, token, length)] = ((pid << 16) | index, label)
    return table


@functools.cache
def _op_labels() -> dict[int, str]:
    return {op: label for op, label in operation_table().values()}


def operation_name(op: int) -> str:
    """Label decoder: op id -> operation (the protocol's table, else other)."""
    return _op_labels().get(op, OTHER)


def status_name(status: int) -> str:
    """Label decoder: protocol << 16 | code -> the status label."""
    proto, code = protocol_name(status >> 16), status & 0xFFFF
    if proto == "http":
        return str(code) if 100 <= code <= 599 else OTHER
    if proto == "dns":
        return DNS_RCODES.get(code, OTHER)
    return {1: "ok", 2: "error"}.get(code, OTHER)


def role_name(role: int) -> str:
    return "server" if role else "client"


def protocol_mask(protocols: Iterable[str]) -> int:
    """Bitmask of l7_config[0]: bit n for protocol number n."""
    mask = 0
    for name in protocols:
        mask |= 1 << PROTOCOL_IDS[name]
    return mask


def series_bound() -> int:
    """Most request series one pod can have: per protocol and direction,
    every operation (with other) times every status (with other)."""
    ops: dict[int, set[str]] = {}
    for (pid, _, _), (_, label) in operation_table().items():
        ops.setdefault(pid, set()).add(label)
    statuses = {"http": 500 + 1, "dns": len(DNS_RCODES) + 1}
    return sum(2 * (len(ops.get(pid, ())) + 1) * statuses.get(name, 3) for name, pid in PROTOCOL_IDS.items())


_DECODERS = {"protocol": protocol_name, "direction": role_name, "operation": operation_name,
             "status": status_name}


class L7Collector(BpfCollector):
    name = "l7"
    source = "l7.c"
    specs = (
        MetricSpec("kpod_l7_requests_total",
                   "Application-protocol requests answered, by protocol, direction (server: the pod "
                   "answered; client: the pod asked), operation and status.", "counter",
                   labels=("protocol", "direction", "operation", "status"), map="l7_requests",
                   key=("cgid", "proto", "role", "op", "status"), decoders=_DECODERS),
        MetricSpec("kpod_l7_request_duration_seconds",
                   "Time from a request to its response: for a client from sending the request to "
                   "receiving the response, for a server from receiving it to sending the response.",
                   "histogram", labels=("protocol", "direction", "operation"), unit_seconds=1e-9,
                   map="l7_durations", key=("cgid", "proto", "role", "op"), decoders=_DECODERS),
    )

    # l7_edges: requests per topology edge (keyed like the network collector's).
    cgroup_maps = ("l7_requests", "l7_durations", "l7_edges")
    raw_tracepoints = False
    """Whether l7_sock runs as raw tracepoints (set by cflags, from the kernel's BTF)."""

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        snap = super().collect(targets)
        snap.edge_requests = tuple(_edge_requests(key, value) for key, value in self.read_map("l7_edges"))
        return snap

    def cflags(self, config: AgentConfig) -> list[str]:
        numbers = syscall_numbers()
        regs = PT_REGS.get(machine_arch())
        if regs is None:
            raise CollectorError(f"l7: no register layout for architecture {machine_arch()!r}")
        return super().cflags(config) + [f"-DNR_{name}={numbers[name]}" for name in SYSCALLS] + [
            f"-DREGS_ARG1={regs[0]}", f"-DREGS_NR={regs[1]}", f"-DKPOD_MAX_EDGES={topology.MAX_EDGES}",
            *self._raw_tracepoint_flags()]

    def _raw_tracepoint_flags(self) -> list[str]:
        """Offsets of struct sock's family and protocol in this kernel, which
        the raw-tracepoint form reads; none (the perf-event form) without BTF."""
        try:
            offsets = (btf.member_offset("sock_common", "skc_family"), btf.member_offset("sock", "sk_protocol"))
        except btf.BtfError as exc:
            log.info("l7: sock tracepoints in their perf-event form (%s)", exc)
            self.raw_tracepoints = False
            return []
        self.raw_tracepoints = True
        return [f"-DSK_FAMILY_OFFSET={offsets[0]}", f"-DSK_PROTOCOL_OFFSET={offsets[1]}"]

    def after_load(self, config: AgentConfig) -> None:
        ops = self.bpf["l7_ops"]
        for (pid, token, length), (op, _) in operation_table().items():
            key = ops.Key()
            key.proto, key.len = pid, length
            for i, byte in enumerate(token[:16]):
                key.tok[i] = byte
            ops[key] = ctypes.c_uint32(op)
        self.reconfigure(config)
        for tracepoint in SOCK_TRACEPOINTS:
            if self.raw_tracepoints:
                self.bpf.attach_raw_tracepoint(tp=tracepoint.split(":")[1], fn_name="l7_sock")
            else:
                self.bpf.attach_tracepoint(tp=tracepoint, fn_name="l7_sock")

    def reconfigure(self, config: AgentConfig) -> bool:
        self.bpf["l7_config"][ctypes.c_int(0)] = ctypes.c_uint32(protocol_mask(config.l7_protocols()))
        return True


def _edge_requests(key: Any, value: Any) -> tuple[topology.EdgeKey, topology.EdgeRequests]:
    return edge_key(key), topology.EdgeRequests(protocol_name(int(key.proto)), int(value.requests),
                                                 int(value.duration_ns))
