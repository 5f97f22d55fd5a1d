"""Field offsets of kernel structs, from the running kernel's BTF.

BCC compiles against the kernel headers it finds, which need not match the
running kernel, and has no CO-RE relocation. A raw tracepoint hands its
program the tracepoint's C arguments (here a `struct sock *`), so a field of
that struct is read at an offset that must be this kernel's. The kernel
describes its own types in /sys/kernel/btf/vmlinux; this reads just enough of
that format (a header, then types one after another, each followed by a
kind-specific tail; docs.kernel.org/bpf/btf.html) to find a member's byte
offset. Hand-written because no packaged Python library reads BTF, and
bpftool is not in the agent's image.
"""
from __future__ import annotations

import functools
import struct
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
_MAGIC = 0xEB9F
_STRUCT, _UNION = 4, 5
# Bytes after a type's 12-byte common part, by kind: fixed, or per vlen entry.
_TAIL_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_TAIL_PER_ENTRY = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}


class BtfError(RuntimeError):
    pass


_Type = tuple[str, int, int, list[tuple[str, int, int]]]


def _parse(data: bytes) -> list[_Type]:
    """(name, kind, kind_flag, members) per type id - 1; members only for structs and unions."""
    if len(data) < 24:
        raise BtfError("BTF data too short")
    magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    if magic != _MAGIC:
        raise BtfError(f"not BTF (magic {magic:#x})")
    type_off, type_len, str_off, _str_len = struct.unpack_from("<IIII", data, 8)
    strings = hdr_len + str_off

    def name(off: int) -> str:
        end = data.index(b"\0", strings + off)
        return data[strings + off:end].decode()

    types = []
    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    while pos < end:
        name_off, info, _size = struct.unpack_from("<III", data, pos)
        vlen, kind, kind_flag = info & 0xFFFF, (info >> 24) & 0x1F, info >> 31
        pos += 12
        members: list[tuple[str, int, int]] = []
        if kind in (_STRUCT, _UNION):
            for i in range(vlen):
                m_name, m_type, m_offset = struct.unpack_from("<III", data, pos + 12 * i)
                bits = m_offset & 0xFFFFFF if kind_flag else m_offset
                members.append((name(m_name), m_type, bits))
        pos += _TAIL_FIXED.get(kind, 0) + _TAIL_PER_ENTRY.get(kind, 0) * vlen
        types.append((name(name_off) if name_off else "", kind, kind_flag, members))
    return types


@functools.lru_cache(maxsize=1)
def _types(path: Path = VMLINUX) -> list[_Type]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BtfError(f"cannot read {path}: {exc.strerror}") from None
    return _parse(data)


def member_offset(struct_name: str, member: str, path: Path = VMLINUX) -> int:
    """Byte offset of `member` in `struct struct_name`, looking into anonymous
    structs and unions; BtfError when there is no BTF, no such field, or it
    is a bit field."""
    types = _types(path)

    def find(type_id: int, base_bits: int) -> int | None:
        _, kind, _, members = types[type_id - 1]
        for m_name, m_type, bits in members:
            if m_name == member:
                return base_bits + bits
            if not m_name and 0 < m_type <= len(types) and types[m_type - 1][1] in (_STRUCT, _UNION):
                found = find(m_type, base_bits + bits)
                if found is not None:
                    return found
        return None

    for type_id, (t_name, kind, _, _) in enumerate(types, start=1):
        if t_name == struct_name and kind == _STRUCT:
            bits = find(type_id, 0)
            if bits is None:
                break
            if bits % 8:
                raise BtfError(f"struct {struct_name}.{member} is a bit field")
            return bits // 8
    raise BtfError(f"struct {struct_name} has no member {member} in this kernel's BTF")
