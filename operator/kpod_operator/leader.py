"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does.

Why a Lease of our own and not kopf's peering: kopf's peering needs its own
CRD (KopfPeering), and with two replicas of the same priority it only warns
and lets both run, so it does not exclude a second writer; it also has no
notion of a lease that expires on a clock. A Lease is the API's standard
lock, readable with `kubectl get lease`, with optimistic concurrency
(resourceVersion) deciding every race.

- The leader renews every ``retry_period``. It may write only while its last
  successful renewal started less than ``renew_deadline`` ago (checked
  before every write, on the monotonic clock); past that it stops writing
  and the process exits, to come back as a standby.
- A standby takes the Lease once it has seen the same holder record for
  ``lease_duration`` without change (its own clock: no clock skew between
  nodes matters). ``renew_deadline < lease_duration`` leaves a gap in which
  nobody writes: the old leader has stopped before a new one may start.
- Worst-case takeover after the leader dies: lease_duration + 2 x
  retry_period (8 + 2 x 1.5 = 11 s with the defaults, plus request latency).
- A leader that stops cleanly releases the Lease: the standby takes over at
  its next poll (an upgrade hands over in ~1.5 s).
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kpod_operator import kube as kubeapi

log = logging.getLogger("kpod_operator.leader")

LEASE_NAME = "kpod-operator"


def default_identity() -> str:
    """Pod name (or hostname) plus a random suffix: two processes never share one."""
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    identity: str = dataclasses.field(default_factory=default_identity)
    name: str = LEASE_NAME
    lease_duration: float = 8.0
    """Seconds a standby waits on an unchanged holder record before taking over."""
    renew_deadline: float = 5.0
    """Seconds after the start of its last successful renewal that the leader may write."""
    retry_period: float = 1.5
    """Seconds between renewals (leader) and polls (standby)."""


def _micro_time(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, kube: kubeapi.Kube, config: LeaseConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # Its own client: lease requests must not wait behind (or be refused
        # like) the operator's writes, and give up within one retry period.
        self.kube = kubeapi.Kube(kube.api, timeout=config.retry_period)
        self.kube.errors = kube.errors
        self.config = config
        self.clock = clock
        self._valid_until = 0.0
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._lock = threading.Lock()
        self.on_change: Callable[[bool], None] = lambda leading: None

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.config.namespace}/leases/{self.config.name}"

    def holding(self) -> bool:
        """May this process write now? (renewed recently enough)."""
        with self._lock:
            return self.clock() < self._valid_until

    def _spec(self, transitions: int, acquire_time: str | None) -> dict[str, Any]:
        now = _micro_time()
        return {"holderIdentity": self.config.identity,
                "leaseDurationSeconds": max(1, int(round(self.config.lease_duration))),
                "acquireTime": acquire_time or now, "renewTime": now, "leaseTransitions": transitions}

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this process holds the Lease afterwards."""
        started = self.clock()
        try:
            lease = self.kube.get(self.path)
            if lease is None:
                self.kube.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                  "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                                  "spec": self._spec(0, None)})
                return self._won(started)
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
            if record != self._observed:
                self._observed, self._observed_at = record, started
            if holder != self.config.identity and holder and \
                    started < self._observed_at + self.config.lease_duration:
                return self._lost()
            transitions = int(spec.get("leaseTransitions") or 0)
            renewing = holder == self.config.identity
            body = {**lease, "spec": self._spec(transitions if renewing else transitions + 1,
                                                spec.get("acquireTime") if renewing else None)}
            # PUT with the resourceVersion read: of two racing standbys one gets 409.
            self.kube.request("PUT", self.path, body=body, query={"fieldManager": kubeapi.FIELD_MANAGER})
            return self._won(started)
        except kubeapi.ApiError as exc:
            log.debug("lease %s: %s", self.config.name, exc)
            return self.holding()

    def _won(self, started: float) -> bool:
        with self._lock:
            was = self._valid_until > started
            self._valid_until = started + self.config.renew_deadline
        if not was:
            log.info("became the leader (%s)", self.config.identity)
            self.on_change(True)
        return True

    def _lost(self) -> bool:
        with self._lock:
            self._valid_until = 0.0
        return False

    def release(self) -> None:
        """Give the Lease up at a clean stop, so a standby need not wait for it to expire."""
        if not self.holding():
            return
        with self._lock:
            self._valid_until = 0.0
        try:
            lease = self.kube.get(self.path)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.config.identity:
                spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1,
                        "renewTime": _micro_time()}
                self.kube.request("PUT", self.path, body={**lease, "spec": spec},
                                  query={"fieldManager": kubeapi.FIELD_MANAGER})
                log.info("released the lease")
        except kubeapi.ApiError as exc:
            log.warning("could not release the lease: %s", exc)
        self.on_change(False)

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until leader (True) or stopped (False)."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            if await loop.run_in_executor(None, self.try_acquire_or_renew):
                return True
            try:
                await asyncio.wait_for(stop.wait(), self.config.retry_period)
            except TimeoutError:
                pass
        return False

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew until stopped; returns early when the Lease was lost."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.config.retry_period)
                return
            except TimeoutError:
                pass
            await loop.run_in_executor(None, self.try_acquire_or_renew)
            if not self.holding():
                log.error("lost the lease %s/%s: stopping", self.config.namespace, self.config.name)
                self.on_change(False)
                return
