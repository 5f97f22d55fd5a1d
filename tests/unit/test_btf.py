"""Struct member offsets from the running kernel's BTF, checked against
bpftool's reading of the same file."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kpod_agent import btf

FIELDS = [("sock", "sk_protocol"), ("sock", "sk_type"), ("sock_common", "skc_family"),
          ("sock_common", "skc_state"), ("sock", "sk_rcvbuf"), ("task_struct", "pid")]


def _bpftool_offset(struct_name: str, member: str) -> int:
    dump = subprocess.run(["bpftool", "btf", "dump", "file", str(btf.VMLINUX)], capture_output=True, text=True,
                          check=True).stdout
    block = re.search(rf"STRUCT '{struct_name}' size=\d+ vlen=\d+\n((?:\t.*\n)+)", dump)
    assert block is not None
    found = re.search(rf"'{member}' type_id=\d+ bits_offset=(\d+)", block.group(1))
    assert found is not None, f"{struct_name}.{member} not a direct member in bpftool's dump"
    return int(found.group(1)) // 8


@pytest.mark.skipif(not btf.VMLINUX.exists(), reason="this kernel has no BTF (/sys/kernel/btf/vmlinux)")
@pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool (Debian package bpftool) is needed")
@pytest.mark.parametrize("struct_name, member", FIELDS)
def test_offsets_match_bpftool(struct_name: str, member: str) -> None:
    assert btf.member_offset(struct_name, member) == _bpftool_offset(struct_name, member)


def test_unknown_member_missing_file_and_garbage_are_errors(tmp_path: Path) -> None:
    if btf.VMLINUX.exists():
        with pytest.raises(btf.BtfError, match="no member nope"):
            btf.member_offset("sock", "nope")
    with pytest.raises(btf.BtfError, match="cannot read"):
        btf.member_offset("sock", "sk_protocol", tmp_path / "absent")
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(btf.BtfError, match="not BTF"):
        btf.member_offset("sock", "sk_protocol", junk)


@pytest.mark.skipif(not btf.VMLINUX.exists(), reason="this kernel has no BTF (/sys/kernel/btf/vmlinux)")
def test_members_of_anonymous_unions_are_found() -> None:
    # skc_dport is the first half of skc_portpair, both inside anonymous unions
    assert btf.member_offset("sock_common", "skc_dport") == btf.member_offset("sock_common", "skc_portpair")
