"""The operator's settings: defaults, and how the environment changes them.

Read once at start-up (``from_env``); everything else receives them as
values, so tests build their own with short periods instead of patching the
environment.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

from kpod_operator import leader, render

DEFAULT_NAMESPACE = "kpod-system"


@dataclasses.dataclass
class OperatorConfig:
    namespace: str = DEFAULT_NAMESPACE
    """Where the fleet CR, the DaemonSet, ConfigMap and Service live."""
    resync_seconds: float = 30.0
    """Timer period: DaemonSet rollout check, drift repair, late Prometheus Operator CRDs."""
    stuck_after_seconds: float = 600.0
    """A rollout with no movement for this long is reported as RolloutStuck."""
    retry_base_seconds: float = 1.0
    """First retry of a change whose API calls failed (409, 5xx, timeout); the
    delay doubles per retry up to resync_seconds, so a passing conflict heals
    in a second and a broken API server is not hammered."""
    rules_path: pathlib.Path = render.RULES_ASSET
    """PrometheusRule groups shipped with the operator."""
    dashboard_path: pathlib.Path = render.DASHBOARD_ASSET
    """Grafana dashboard shipped with the operator."""
    cluster_name: str = ""
    """Written into the node config as the ``cluster`` label; empty: none."""


def float_env(name: str, default: float) -> float:
    """A positive number from the environment; anything else is the default
    (a typo in a Deployment must not stop the operator)."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def from_env(namespace: str | None = None) -> OperatorConfig:
    """``--namespace`` first, then KPOD_OPERATOR_NAMESPACE, KPOD_RESYNC_SECONDS,
    KPOD_ROLLOUT_TIMEOUT_SECONDS, KPOD_CLUSTER_NAME."""
    return OperatorConfig(
        namespace=namespace or os.environ.get("KPOD_OPERATOR_NAMESPACE") or DEFAULT_NAMESPACE,
        resync_seconds=float_env("KPOD_RESYNC_SECONDS", 30.0),
        stuck_after_seconds=float_env("KPOD_ROLLOUT_TIMEOUT_SECONDS", 600.0),
        cluster_name=os.environ.get("KPOD_CLUSTER_NAME", ""),
    )


def lease_from_env(namespace: str) -> leader.LeaseConfig:
    """The leader Lease's timings: KPOD_LEASE_SECONDS, KPOD_LEASE_RENEW_DEADLINE_SECONDS,
    KPOD_LEASE_RETRY_SECONDS."""
    return leader.LeaseConfig(
        namespace=namespace,
        lease_duration=float_env("KPOD_LEASE_SECONDS", 8.0),
        renew_deadline=float_env("KPOD_LEASE_RENEW_DEADLINE_SECONDS", 5.0),
        retry_period=float_env("KPOD_LEASE_RETRY_SECONDS", 1.5))
