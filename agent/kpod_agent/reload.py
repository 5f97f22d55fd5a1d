"""Config reloads: what changes between two configs, and where configs come from.

`plan_reload` is pure: the agent attaches, detaches or reconfigures exactly
what it lists, and everything else keeps running with its counters.
Sources: a watched file (standalone; SIGHUP forces a read) or a ConfigMap
watched through the API (in a cluster; never the mounted volume, whose
kubelet sync can lag by a minute).
"""
from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kpod_agent import filters
from kpod_agent.config import MAX_DOCUMENT_BYTES, AgentConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadPlan:
    attach: tuple[str, ...]
    detach: tuple[str, ...]
    reconfigure: tuple[str, ...]
    restart_discovery: bool
    restart_otlp: bool = False


def _inputs(name: str, config: AgentConfig) -> Any:
    """What a running collector takes in place besides its filter map."""
    if name == "syscall":
        policies = filters.syscall_policies(config)
        return [sorted(a) for a in policies.allowlists], config.syscall_latency()
    if name == "l7":
        return config.l7_protocols()
    if name == "network":
        return config.topology
    return None


def plan_reload(old: AgentConfig | None, new: AgentConfig) -> ReloadPlan:
    before = set(old.node_collectors()) if old is not None else set()
    after = set(new.node_collectors())
    kept = before & after
    # BPF map sizes are fixed at load: a new capacity means a new program.
    reattach = kept if old is not None and old.maxCgroups != new.maxCgroups else set()
    reconfigure = tuple(sorted(
        name for name in kept - reattach if old is not None and _inputs(name, old) != _inputs(name, new)
    ))
    return ReloadPlan(
        attach=tuple(sorted((after - before) | reattach)),
        detach=tuple(sorted((before - after) | reattach)),
        reconfigure=reconfigure,
        restart_discovery=old is None or old.discovery != new.discovery,
        # The pusher only: collectors keep their counters.
        restart_otlp=(old.otlp if old is not None else None) != new.otlp,
    )


Submit = Callable[[bytes, str], bool]


class ConfigFileError(Exception):
    """The config file cannot be read; the message names the file and why."""


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def read_regular_file(path: str, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, without ever
    blocking: the type is checked before opening (opening a device can have
    effects) and again on the open descriptor (the path may have been swapped
    in between; O_NONBLOCK makes that open of a FIFO return at once)."""
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            try:
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode) and st.st_size <= limit:
                    with os.fdopen(fd, "rb", closefd=False) as fh:
                        data = fh.read(limit + 1)
                    if len(data) > limit:  # grew while read
                        st = os.fstat(fd)
                    else:
                        return data
            finally:
                os.close(fd)
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise ConfigFileError(f"cannot read {path}: it is {kind}, not a regular file")
    raise ConfigFileError(f"cannot read {path}: {max(st.st_size, limit + 1)} bytes, "
                          f"more than the {limit} allowed")


class FileSource:
    """Polls a config file every `poll` seconds, so an edit, an atomic rename,
    a ConfigMap-style symlink swap or a permission change all take effect
    within 50 ms (a stat() 20 times a second costs nothing measurable).
    `trigger()` (SIGHUP) forces a read.

    Only a regular file is ever opened, and its size is checked before a byte
    is read: opening a FIFO blocks until a writer comes (forever, for the only
    thread that watches the file), and a device never ends."""

    def __init__(self, path: str, submit: Submit, reject: Callable[[str], None], poll: float = 0.05) -> None:
        self.path = path
        self.submit = submit
        self.reject = reject
        self.poll = poll
        self._stamp: tuple[int, ...] | None = None
        self._wake = threading.Event()
        self._force = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _current_stamp(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        # ctime and mode: a chmod back to readable changes neither the
        # content nor the mtime, and must still trigger a read.
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev, st.st_mode)

    def read_once(self) -> bool:
        self._stamp = self._current_stamp()
        try:
            data = read_regular_file(self.path, MAX_DOCUMENT_BYTES)
        except ConfigFileError as exc:
            self.reject(str(exc))
            return False
        return self.submit(data, f"file {self.path}")

    def trigger(self) -> None:
        self._force = True
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="config-file", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll)
            self._wake.clear()
            if self._stop.is_set():
                return
            stamp = self._current_stamp()
            if self._force or (stamp is not None and stamp != self._stamp):
                self._force = False
                try:
                    self.read_once()
                except Exception:  # never let the watcher die
                    log.exception("config reload failed")
