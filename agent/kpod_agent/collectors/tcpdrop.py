"""tcpdrop: TCP packets dropped by the kernel, charged to the pod whose
socket they were for (bpf/tcpdrop.c says how)."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from kpod_agent.collectors.base import BpfCollector, CollectorError, MetricSpec
from kpod_agent.config import AgentConfig

TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_SYMBOL = re.compile(r"\{\s*(\d+)\s*,\s*\"(\w+)\"\s*\}")
_FIELD = re.compile(r"field:([^;]*?)\s*(\w+)(?:\[(\d+)\])?;\s*offset:(\d+);\s*size:(\d+);")
_SCALARS = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}
# Tracepoint -> (C struct name, fields the program reads).
RECORDS = {
    "skb/kfree_skb": ("kfree_skb_args", ("skbaddr", "rx_sk", "reason")),
    "tcp/tcp_send_reset": ("send_reset_args", ("skbaddr", "skaddr", "saddr", "daddr")),
}


def drop_reasons(format_text: str) -> dict[str, int]:
    """skb:kfree_skb format file -> drop reason name -> the kernel's enum value.

    The values move between kernel versions; the format file's
    __print_symbolic table is the running kernel's own."""
    start = format_text.find("__print_symbolic(REC->reason")
    if start < 0:
        return {}
    return {name: int(value) for value, name in _SYMBOL.findall(format_text[start:])}


def record_struct(struct_name: str, format_text: str, wanted: Iterable[str]) -> str:
    """C struct of a tracepoint record with only `wanted` fields, each at the
    offset the running kernel's format file gives, padding in between.

    TRACEPOINT_PROBE would declare the record from the kernel headers, which
    here are older than the kernel and lack its enum types (skb_drop_reason,
    sk_rst_reason); offsets and sizes are all the program needs."""
    fields = {m.group(2): (int(m.group(4)), int(m.group(5)), m.group(3)) for m in _FIELD.finditer(format_text)}
    lines = [f"struct {struct_name} {{"]
    at = 0
    for name in sorted(wanted, key=lambda n: fields[n][0] if n in fields else -1):
        if name not in fields:
            raise CollectorError(f"tracepoint record {struct_name} has no field {name!r} on this kernel")
        offset, size, array = fields[name]
        if offset > at:
            lines.append(f"    u8 __pad{at}[{offset - at}];")
        if array is not None or size not in _SCALARS:
            lines.append(f"    u8 {name}[{size}];")
        else:
            lines.append(f"    {_SCALARS[size]} {name};")
        at = offset + size
    lines.append("} __attribute__((packed));")
    return "\n".join(lines) + "\n"


def read_format(event: str, tracefs_roots: Iterable[str] = TRACEFS_ROOTS) -> str:
    for root in tracefs_roots:
        try:
            return (Path(root) / "events" / event / "format").read_text()
        except OSError:
            continue
    raise CollectorError(f"tracepoint {event} not found (is tracefs mounted?)")


def read_drop_reasons(tracefs_roots: Iterable[str] = TRACEFS_ROOTS) -> dict[str, int]:
    for root in tracefs_roots:
        try:
            return drop_reasons((Path(root) / "events/skb/kfree_skb/format").read_text())
        except OSError:
            continue
    return {}


class TcpdropCollector(BpfCollector):
    name = "tcpdrop"
    source = "tcpdrop.c"
    specs = (
        MetricSpec("kpod_net_tcp_drops_total",
                   "TCP packets the kernel dropped that were for one of the cgroup's sockets.", "counter",
                   map="tcp_drops"),
    )

    def bpf_text(self, config: AgentConfig) -> str:
        try:
            records = "".join(record_struct(struct, read_format(event), fields)
                              for event, (struct, fields) in RECORDS.items())
        except CollectorError as exc:
            # Without kfree_skb's rx_sk (6.12) and tcp_send_reset's skbaddr
            # no drop can be tied to a pod.
            raise CollectorError(f"tcpdrop needs Linux >= 6.12: {exc}") from None
        return records + super().bpf_text(config)

    def after_load(self, config: AgentConfig) -> None:
        self.bpf.attach_tracepoint(tp="skb:kfree_skb", fn_name="on_kfree_skb")
        self.bpf.attach_tracepoint(tp="tcp:tcp_send_reset", fn_name="on_send_reset")

    def cflags(self, config: AgentConfig) -> list[str]:
        reasons: Mapping[str, int] = read_drop_reasons()
        if "NO_SOCKET" not in reasons:
            raise CollectorError("skb:kfree_skb has no drop reasons on this kernel (needs Linux >= 5.17)")
        return super().cflags(config) + [f"-DKPOD_DROP_NO_SOCKET={reasons['NO_SOCKET']}"]
