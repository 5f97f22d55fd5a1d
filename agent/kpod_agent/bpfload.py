"""Load and unload BCC programs: the only place that imports bcc.

bcc's Python objects are not thread-safe; callers serialize (the agent holds
its kernel lock around every call into a BPF object).
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
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


def _ensure_tmpdir() -> None:
    try:
        SAFE_TMPDIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.environ["TMPDIR"] = str(SAFE_TMPDIR)
        tempfile.tempdir = None
    except OSError as exc:
        log.debug("cannot create %s: %s", SAFE_TMPDIR, exc)


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
    try:
        # Clang's diagnostics go to stderr, where the agent's log is.
        bpf.__init__(text=text, cflags=flags)
    except Exception as exc:
        _discard(bpf)
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
