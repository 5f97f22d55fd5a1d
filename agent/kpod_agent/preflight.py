"""Checks before loading any probe, each failing with what to install or do.

Run by `kpod-agent` at start: a user who forgot a step sees what to do,
never a traceback. Root is checked first (without it the other checks
cannot look); then every other problem is reported at once, so one pass
fixes them all.

    python -m kpod_agent.preflight      exit 0 and "ok", or 1 and the problems

Where the checks look, overridable so tests can point them at empty trees:
    KPOD_MODULES_ROOT   kernel modules/headers root (default /lib/modules)
    KPOD_TRACEFS_ROOTS  ':'-separated tracefs mount points
                        (default /sys/kernel/tracing:/sys/kernel/debug/tracing)
    KPOD_PROC_MOUNTS    mount table (default /proc/mounts)
"""
from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

DEFAULT_MODULES_ROOT = "/lib/modules"
DEFAULT_TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
DEFAULT_PROC_MOUNTS = "/proc/mounts"


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


def check_headers(modules_root: str | None = None) -> None:
    root = modules_root or os.environ.get("KPOD_MODULES_ROOT") or DEFAULT_MODULES_ROOT
    release = platform.release()
    build = Path(root, release, "build")
    if not (build / "include").is_dir():
        raise PreflightError(
            f"no kernel headers at {build}: install linux-headers-{release} "
            "(or linux-headers-amd64 and link it there; scripts/setup.sh does it)."
        )
    # Debian splits headers: the arch package (build) holds generated files,
    # the -common package (source) the rest. BCC needs both.
    source = Path(root, release, "source")
    if not any((tree / "include" / "linux" / "kconfig.h").is_file() for tree in (build, source)):
        raise PreflightError(
            f"kernel headers at {build} are incomplete: no include/linux/kconfig.h there or in {source}. "
            f"Install the matching linux-headers-*-common package and link it as {source} "
            "(scripts/setup.sh does it)."
        )


def _tracefs_roots() -> tuple[str, ...]:
    env = os.environ.get("KPOD_TRACEFS_ROOTS")
    if env is None:
        return DEFAULT_TRACEFS_ROOTS
    return tuple(part for part in env.split(":") if part)


def check_tracefs(roots: tuple[str, ...] | None = None) -> None:
    roots = _tracefs_roots() if roots is None else roots
    if not any(Path(root, "events").is_dir() for root in roots):
        where = roots[0] if roots else DEFAULT_TRACEFS_ROOTS[0]
        raise PreflightError(
            f"tracefs is not mounted (no events/ under {' or '.join(roots) or '(none)'}): "
            f"run `mount -t tracefs nodev {where}` (scripts/setup.sh does it)."
        )


def check_cgroup2(proc_mounts: str | None = None) -> None:
    proc_mounts = proc_mounts or os.environ.get("KPOD_PROC_MOUNTS") or DEFAULT_PROC_MOUNTS
    try:
        mounts = Path(proc_mounts).read_text()
    except OSError as exc:
        raise PreflightError(f"cannot read {proc_mounts}: {exc.strerror}") from None
    if not any(line.split()[2:3] == ["cgroup2"] for line in mounts.splitlines() if line.strip()):
        raise PreflightError(
            "no cgroup2 filesystem is mounted: kpod-agent attributes events by cgroup v2 id. "
            "Mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified` or boot with systemd's unified hierarchy."
        )


AFTER_ROOT: tuple[Callable[[], None], ...] = (check_bcc, check_headers, check_tracefs, check_cgroup2)


def problems() -> list[str]:
    """Every failed check's message, root first and alone."""
    try:
        check_root()
    except PreflightError as exc:
        return [str(exc)]
    found = []
    for check in AFTER_ROOT:
        try:
            check()
        except PreflightError as exc:
            found.append(str(exc))
    return found


def run_all() -> None:
    found = problems()
    if len(found) == 1:
        raise PreflightError(found[0])
    if found:
        raise PreflightError(f"{len(found)} things to fix first:\n" + "\n".join(f"  - {p}" for p in found))


def main() -> int:
    try:
        run_all()
    except PreflightError as exc:
        print(f"kpod-agent: {exc}", file=sys.stderr)
        return 1
    print("kpod-agent: preflight ok (root, bcc, kernel headers, tracefs, cgroup2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
