"""Load and unload BCC programs: the only place that uses bcc (preflight.py
only checks that it imports).

bcc's Python objects are not thread-safe; callers serialize (the agent holds
its kernel lock around every call into a BPF object).
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import errno
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# bcc 0.26 unpacks kernel headers under $TMPDIR/kheaders-*; a world-writable
# /tmp lets another user plant them. Use a root-owned directory instead.
SAFE_TMPDIR = Path(os.environ.get("KPOD_TMPDIR", "/run/kpod-metrics/tmp"))


class LoadError(RuntimeError):
    """A BPF program that did not compile, load or attach; says which and why."""


PERMISSION_DENIED = "permission denied loading BPF: needs CAP_BPF and CAP_PERFMON"
# Capability numbers (linux/capability.h) and what they are called.
_CAPS = {21: "CAP_SYS_ADMIN", 24: "CAP_SYS_RESOURCE", 38: "CAP_PERFMON", 39: "CAP_BPF"}


def effective_capabilities(status_path: str = "/proc/self/status") -> set[str] | None:
    """Names (of those the agent cares about) in this process's effective set."""
    try:
        for line in Path(status_path).read_text().splitlines():
            if line.startswith("CapEff:"):
                mask = int(line.split()[1], 16)
                return {name for bit, name in _CAPS.items() if mask >> bit & 1}
    except (OSError, ValueError, IndexError):
        pass
    return None


def permission_message(err: int, caps: set[str] | None) -> str | None:
    """What to say when loading failed with ``err`` (None: not a permission
    problem). bcc only says "Failed to compile BPF module"; the errno of its
    failed bpf()/perf_event_open() call is what tells."""
    missing = sorted({"CAP_BPF", "CAP_PERFMON"} - caps) if caps is not None else []
    # EACCES is also the verifier's answer to a program it rejects: a
    # permission problem only when a capability is actually missing.
    if err != errno.EPERM and not (err == errno.EACCES and missing):
        return None
    detail = f"missing {', '.join(missing)}; " if missing else ""
    return (f"{PERMISSION_DENIED} ({detail}kernels before 5.8 need CAP_SYS_ADMIN instead, "
            f"before 5.11 also CAP_SYS_RESOURCE: {os.strerror(err)})")


def _ensure_tmpdir() -> None:
    try:
        SAFE_TMPDIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.environ["TMPDIR"] = str(SAFE_TMPDIR)
        tempfile.tempdir = None
    except OSError as exc:
        log.debug("cannot create %s: %s", SAFE_TMPDIR, exc)


def describe(exc: BaseException) -> str:
    """Message for an exception just raised by a bcc call in this thread (an
    attach, a lazy program load): a permission failure is named as such."""
    text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    if type(exc) is not Exception:  # bcc raises bare Exceptions; ours are already worded
        return text
    return permission_message(ctypes.get_errno(), effective_capabilities()) or text


def _malloc_trim() -> None:
    # Compiling leaves ~50 MB of freed LLVM memory in malloc's arenas.
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def load(text: str, include_dir: Path, cflags: list[str], what: str) -> Any:
    _ensure_tmpdir()
    try:
        from bcc import BPF
    except ImportError as exc:
        raise LoadError(
            "bcc is not importable: install python3-bpfcc and run from a venv made with "
            "--system-site-packages"
        ) from exc
    flags = [f"-I{include_dir}", "-Wno-unused-function", *cflags]
    # Made in two steps to keep a reference when __init__ fails half-way: by
    # then it has loaded and attached the probes before the failing one, and
    # registered an atexit hook that would keep them running until exit.
    bpf = BPF.__new__(BPF)
    ctypes.set_errno(0)
    try:
        # Clang's diagnostics go to stderr, where the agent's log is.
        bpf.__init__(text=text, cflags=flags)
    except Exception as exc:
        # libbcc is loaded with use_errno: this is the errno of its failed call.
        err = ctypes.get_errno()
        _discard(bpf)
        message = permission_message(err, effective_capabilities())
        if message is None:
            message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise LoadError(f"{what}: {message}") from None
    finally:
        _malloc_trim()
    # We detach ourselves; bcc's exit hook would keep every object alive.
    atexit.unregister(bpf.cleanup)
    return bpf


def _discard(bpf: Any) -> None:
    """Detach and close what a failed BPF() constructor had already set up."""
    try:
        atexit.unregister(bpf.cleanup)
        bpf.cleanup()
    except Exception as exc:  # failed before its attributes existed: nothing loaded
        log.debug("cleanup of a half-loaded BPF object: %s", exc)


def unload(bpf: Any) -> None:
    try:
        bpf.cleanup()
    except Exception as exc:  # half-attached objects still release their fds
        log.warning("cleanup of a BPF object failed: %s", exc)


def tracepoint_exists(category: str, event: str) -> bool:
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if Path(root, "events", category, event).is_dir():
            return True
    return False
