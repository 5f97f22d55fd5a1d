"""The agent image's kernel-headers search (docker/kpod-agent-entrypoint.sh),
run with bash against fake host trees: /lib/modules first, then /usr/src,
then the kernel's kheaders archive, then an error naming what to install."""

from __future__ import annotations

import io
import os
import pathlib
import stat
import tarfile

import pytest

from tests.assets.tools import REPO, run, tool

SCRIPT = REPO / "docker/kpod-agent-entrypoint.sh"
RELEASE = "6.1.0-99-amd64"


def headers(root: pathlib.Path, path: str) -> pathlib.Path:
    d = root / path.lstrip("/")
    (d / "include/generated").mkdir(parents=True)
    (d / "include/generated/autoconf.h").write_text("#define CONFIG_X86_64 1\n")
    return d


def kheaders_archive(root: pathlib.Path, corrupt: bool = False) -> pathlib.Path:
    """A real xz tarball laid out like the kernel's: ./include, ./arch/x86/include."""
    path = root / "sys/kernel/kheaders.tar.xz"
    path.parent.mkdir(parents=True, exist_ok=True)
    if corrupt:
        path.write_bytes(b"\xfd7zXZ\x00 truncated")
        return path
    with tarfile.open(path, "w:xz") as tar:
        for name, text in (("./include/generated/autoconf.h", "#define CONFIG_IKHEADERS 1\n"),
                           ("./include/linux/kconfig.h", "\n"),
                           ("./arch/x86/include/asm/ptrace.h", "\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def find(root: pathlib.Path, cache: str = "/var/cache/kpod", **env: str):
    """Runs kpod_find_headers in bash; returns (exit code, kind, dir, stderr)."""
    script = (f'source "{SCRIPT}"; set +e; kpod_find_headers "$ROOT" {RELEASE} {cache}; rc=$?; '
              'echo "$rc|$KPOD_HEADERS_KIND|$KPOD_HEADERS_DIR"')
    out = run(tool("bash"), "-c", script, check=False,
              env={"PATH": os.environ["PATH"], "ROOT": str(root), "KPOD_NO_MODPROBE": "1", **env})
    rc, kind, directory = out.stdout.strip().splitlines()[-1].split("|")
    return int(rc), kind, directory, out.stderr


def test_lib_modules_build_link_into_usr_src_wins(tmp_path):
    headers(tmp_path, f"/usr/src/linux-headers-{RELEASE}")
    link = tmp_path / f"lib/modules/{RELEASE}/build"
    link.parent.mkdir(parents=True)
    link.symlink_to(f"/usr/src/linux-headers-{RELEASE}")  # absolute, as Debian installs it
    kheaders_archive(tmp_path)
    assert find(tmp_path)[:3] == (0, "lib-modules", f"/lib/modules/{RELEASE}/build")


def test_dangling_build_link_falls_back_to_usr_src(tmp_path):
    link = tmp_path / f"lib/modules/{RELEASE}/build"
    link.parent.mkdir(parents=True)
    link.symlink_to(f"/usr/src/linux-headers-{RELEASE}")  # /usr/src of the host not mounted
    headers(tmp_path, f"/usr/src/kernels/{RELEASE}")
    assert find(tmp_path)[:3] == (0, "usr-src", f"/usr/src/kernels/{RELEASE}")


def test_headers_without_generated_config_do_not_count(tmp_path):
    (tmp_path / f"usr/src/linux-headers-{RELEASE}/include").mkdir(parents=True)
    rc, kind, _, err = find(tmp_path)
    assert (rc, kind) == (1, "")


def test_kheaders_archive_is_extracted_once_into_the_cache(tmp_path):
    kheaders_archive(tmp_path)
    rc, kind, directory, _ = find(tmp_path)
    assert (rc, kind, directory) == (0, "kheaders", f"/var/cache/kpod/kheaders-{RELEASE}")
    extracted = tmp_path / directory.lstrip("/")
    assert (extracted / "include/generated/autoconf.h").read_text() == "#define CONFIG_IKHEADERS 1\n"
    assert (extracted / "arch/x86/include/asm/ptrace.h").exists()
    assert stat.S_IMODE((tmp_path / "var/cache/kpod").stat().st_mode) == 0o700
    marker = extracted / ".complete"
    before = marker.stat().st_mtime_ns
    (extracted / "include/generated/autoconf.h").write_text("kept\n")
    assert find(tmp_path)[:3] == (0, "kheaders", directory)
    assert marker.stat().st_mtime_ns == before
    assert (extracted / "include/generated/autoconf.h").read_text() == "kept\n"


def test_an_interrupted_extraction_is_redone(tmp_path):
    kheaders_archive(tmp_path)
    partial = tmp_path / f"var/cache/kpod/kheaders-{RELEASE}"
    (partial / "include").mkdir(parents=True)  # no .complete marker
    rc, kind, directory, _ = find(tmp_path)
    assert (rc, kind) == (0, "kheaders")
    assert (partial / "include/generated/autoconf.h").exists()


def test_a_corrupt_archive_fails_cleanly(tmp_path):
    kheaders_archive(tmp_path, corrupt=True)
    rc, kind, _, err = find(tmp_path)
    assert (rc, kind) == (1, "")
    assert "cannot extract" in err
    assert not list((tmp_path / "var/cache/kpod").iterdir())


def test_nothing_found_names_what_to_install(tmp_path):
    rc, kind, _, err = find(tmp_path)
    assert (rc, kind) == (1, "")
    for hint in (f"apt install linux-headers-{RELEASE}", f"dnf install kernel-devel-{RELEASE}",
                 "modprobe kheaders", "CONFIG_IKHEADERS", "/lib/modules and /usr/src"):
        assert hint in err


def test_explicit_directory_comes_first_and_a_bad_one_is_reported(tmp_path):
    headers(tmp_path, "/opt/headers")
    headers(tmp_path, f"/usr/src/linux-headers-{RELEASE}")
    assert find(tmp_path, KPOD_HEADERS_DIR_OVERRIDE="/opt/headers")[:3] == (0, "override", "/opt/headers")
    rc, kind, directory, err = find(tmp_path, KPOD_HEADERS_DIR_OVERRIDE="/opt/missing")
    assert (rc, kind, directory) == (0, "usr-src", f"/usr/src/linux-headers-{RELEASE}")
    assert "/opt/missing has no kernel headers" in err


def entrypoint(tmp_path: pathlib.Path, *args: str):
    """Runs the entrypoint as the image does, with a stand-in kpod-agent on PATH
    that prints its arguments and environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    agent = bin_dir / "kpod-agent"
    agent.write_text('#!/bin/sh\necho "args=$*"\necho "TMPDIR=$TMPDIR"\n'
                     'echo "BCC_KERNEL_SOURCE=${BCC_KERNEL_SOURCE-unset}"\n')
    agent.chmod(0o755)
    return run(tool("bash"), SCRIPT, *args, check=False, env={
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "KPOD_HOST_ROOT": str(tmp_path / "host"),
        "KPOD_KERNEL_RELEASE": RELEASE, "KPOD_TMPDIR": str(tmp_path / "kpod-tmp"), "KPOD_NO_MODPROBE": "1",
    })


def test_entrypoint_execs_the_agent_with_its_flags_and_a_private_tmpdir(tmp_path):
    headers(tmp_path / "host", f"/usr/src/linux-headers-{RELEASE}")
    out = entrypoint(tmp_path, "--configmap", "kpod-system/kpod-agent-config", "--listen", "0.0.0.0:9090")
    assert out.returncode == 0, out.stderr
    assert "args=--configmap kpod-system/kpod-agent-config --listen 0.0.0.0:9090" in out.stdout
    assert f"TMPDIR={tmp_path / 'kpod-tmp'}" in out.stdout
    assert f"BCC_KERNEL_SOURCE=/usr/src/linux-headers-{RELEASE}" in out.stdout
    assert stat.S_IMODE((tmp_path / "kpod-tmp").stat().st_mode) == 0o700
    assert "headers from usr-src" in out.stderr


def test_entrypoint_leaves_bcc_its_default_for_lib_modules(tmp_path):
    headers(tmp_path / "host", f"/lib/modules/{RELEASE}/build")
    out = entrypoint(tmp_path, "kpod-agent", "--config", "/etc/kpod/agent.yaml")
    assert out.returncode == 0, out.stderr
    assert "args=--config /etc/kpod/agent.yaml" in out.stdout
    assert "BCC_KERNEL_SOURCE=unset" in out.stdout


def test_entrypoint_refuses_to_start_without_headers(tmp_path):
    (tmp_path / "host").mkdir()
    out = entrypoint(tmp_path, "--configmap", "kpod-system/kpod-agent-config")
    assert out.returncode == 1
    assert "args=" not in out.stdout
    assert "no kernel headers found" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a directory owned by another user, which needs root")
def test_entrypoint_refuses_a_tmpdir_owned_by_someone_else(tmp_path):
    headers(tmp_path / "host", f"/lib/modules/{RELEASE}/build")
    (tmp_path / "kpod-tmp").mkdir()
    os.chown(tmp_path / "kpod-tmp", 65534, 65534)
    out = entrypoint(tmp_path, "--configmap", "kpod-system/kpod-agent-config")
    assert out.returncode == 1
    assert "is not owned by uid 0" in out.stderr
