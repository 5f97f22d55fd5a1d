"""Checks before loading any probe, each failing with what to install or do.

Run by `kpod-agent` at start: a user who forgot a step sees one line that
names it, never a traceback.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path


class PreflightError(RuntimeError):
    pass


def check_root() -> None:
    if os.geteuid() != 0:
        raise PreflightError(
            "kpod-agent must run as root (loading BPF programs needs CAP_BPF, CAP_PERFMON and "
            "CAP_SYS_ADMIN): run it with sudo, or `sudo make run`."
        )


def check_bcc() -> None:
    try:
        import bcc  # noqa: F401
    except ImportError:
        raise PreflightError(
            "bcc is not importable: install it with `apt-get install python3-bpfcc bpfcc-tools` and "
            "use a venv created with `--system-site-packages` (scripts/setup.sh does both)."
        ) from None


def check_headers(modules_root: str = "/lib/modules") -> None:
    build = Path(modules_root, platform.release(), "build")
    if not (build / "include").is_dir():
        raise PreflightError(
            f"no kernel headers at {build}: install linux-headers-{platform.release()} "
            "(or linux-headers-amd64 and link it there; scripts/setup.sh does it)."
        )


def check_tracefs(roots: tuple[str, ...] = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")) -> None:
    if not any(Path(root, "events").is_dir() for root in roots):
        raise PreflightError(
            "tracefs is not mounted: run `mount -t tracefs nodev /sys/kernel/tracing` "
            "(scripts/setup.sh does it)."
        )


def check_cgroup2(proc_mounts: str = "/proc/mounts") -> None:
    try:
        mounts = Path(proc_mounts).read_text()
    except OSError as exc:
        raise PreflightError(f"cannot read {proc_mounts}: {exc.strerror}") from None
    if not any(line.split()[2:3] == ["cgroup2"] for line in mounts.splitlines() if line.strip()):
        raise PreflightError(
            "no cgroup2 filesystem is mounted: kpod-agent attributes events by cgroup v2 id. "
            "Mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified` or boot with systemd's unified hierarchy."
        )


def run_all() -> None:
    check_root()
    check_bcc()
    check_headers()
    check_tracefs()
    check_cgroup2()
