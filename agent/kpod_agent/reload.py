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
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kpod_agent import filters
from kpod_agent.config import AgentConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadPlan:
    attach: tuple[str, ...]
    detach: tuple[str, ...]
    reconfigure: tuple[str, ...]
    restart_discovery: bool


def _inputs(name: str, config: AgentConfig) -> Any:
    """What a running collector takes in place besides its filter map."""
    if name == "syscall":
        policies = filters.syscall_policies(config)
        return [sorted(a) for a in policies.allowlists], config.syscall_latency()
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
    )


Submit = Callable[[bytes, str], bool]


class FileSource:
    """Polls a config file (mtime, size, inode) every `poll` seconds, so an
    edit, an atomic rename or a ConfigMap-style symlink swap all take effect
    within 50 ms (a stat() 20 times a second costs nothing measurable).
    `trigger()` (SIGHUP) forces a read."""

    def __init__(self, path: str, submit: Submit, reject: Callable[[str], None], poll: float = 0.05) -> None:
        self.path = path
        self.submit = submit
        self.reject = reject
        self.poll = poll
        self._stamp: tuple[int, int, int, int] | None = None
        self._wake = threading.Event()
        self._force = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _current_stamp(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)

    def read_once(self) -> bool:
        self._stamp = self._current_stamp()
        try:
            with open(self.path, "rb") as fh:
                data = fh.read((1 << 20) + 1)
        except OSError as exc:
            self.reject(f"cannot read {self.path}: {exc.strerror}")
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
