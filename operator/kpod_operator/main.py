"""kpod-operator [--namespace NS] [--verbose] (contract §5).

Runs kopf cluster-wide for KpodMetricsProfile, with the in-cluster service
account or KUBECONFIG / ~/.kube/config (plain-http servers work, for tests).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import logging
import os
import secrets
import socket
from typing import Any

import kopf

from kpod_agent.version import version as kpod_version
from kpod_operator import handlers
from kpod_operator import kube as kubeapi


def _float_env(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def config_from_env(namespace: str | None = None) -> handlers.OperatorConfig:
    return handlers.OperatorConfig(
        namespace=namespace or os.environ.get("KPOD_OPERATOR_NAMESPACE") or "kpod-system",
        resync_seconds=_float_env("KPOD_RESYNC_SECONDS", 30.0),
        stuck_after_seconds=_float_env("KPOD_ROLLOUT_TIMEOUT_SECONDS", 600.0),
        cluster_name=os.environ.get("KPOD_CLUSTER_NAME", ""),
    )


def build(config: handlers.OperatorConfig, kube: kubeapi.Kube,
          registry: kopf.OperatorRegistry) -> tuple[kopf.OperatorRegistry, kopf.Memo]:
    """Registry with the handlers and settings, and the memo they share."""
    handlers.register(registry, config)

    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        handlers.configure(settings, config)

    kopf.on.startup(id="configure", registry=registry)(startup)
    return registry, kopf.Memo(op=handlers.Operator(config=config, kube=kube))


def operator_identity() -> str:
    """Who this operator is, as kopf records it: the pod name when set, else
    user@host/start/random like kopf's own, except that a uid with no passwd
    entry (the Deployment's non-root uid in a distroless-style image) does not
    crash it: kopf's detection calls getpass.getuser(), which raises there."""
    pod = os.environ.get("POD_ID") or os.environ.get("POD_NAME")
    if pod:
        return pod
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S")
    return f"{user}@{socket.gethostname()}/{now}/{secrets.token_hex(2)}"


async def run_async(config: handlers.OperatorConfig, kube: kubeapi.Kube,
                    registry: kopf.OperatorRegistry, *,
                    stop_flag: Any = None, ready_flag: Any = None,
                    liveness_endpoint: str | None = None) -> None:
    registry, memo = build(config, kube, registry)
    await kopf.operator(
        registry=registry, memo=memo, clusterwide=True, standalone=True,
        identity=operator_identity(),  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        stop_flag=stop_flag, ready_flag=ready_flag, liveness_endpoint=liveness_endpoint,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kpod-operator", description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default=None,
                        help="namespace of the fleet CR and the agent DaemonSet "
                             "(default: $KPOD_OPERATOR_NAMESPACE or kpod-system)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {kpod_version()}")
    parser.add_argument("--liveness", default=os.environ.get("KPOD_OPERATOR_LIVENESS", "http://0.0.0.0:8080/healthz"),
                        help="kopf liveness endpoint (empty to disable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_env(args.namespace)
    kube = kubeapi.Kube.from_environment()
    # The default registry carries kopf's login via the kubernetes client.
    asyncio.run(run_async(config, kube, kopf.get_default_registry(),
                          liveness_endpoint=args.liveness or None))


if __name__ == "__main__":
    main()
