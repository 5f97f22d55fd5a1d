"""kpod-operator [--namespace NS] [--verbose] [--log-format json|text] [--log-level L] [--listen HOST:PORT].

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
import sys
from typing import Any

import kopf

from kpod_agent import runtime_info
from kpod_operator import clock as opclock
from kpod_operator import handlers, leader, reconciler, settings
from kpod_operator import kube as kubeapi
from kpod_operator import metrics as opmetrics

log = logging.getLogger("kpod_operator")


def build(config: settings.OperatorConfig, kube: kubeapi.Kube, registry: kopf.OperatorRegistry,
          metrics: opmetrics.OperatorMetrics | None = None,
          clock: opclock.Clock | None = None) -> tuple[kopf.OperatorRegistry, kopf.Memo]:
    """Registry with the handlers and settings, and the memo they share."""
    handlers.register(registry)

    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        handlers.configure(settings)

    kopf.on.startup(id="configure", registry=registry)(startup)
    return registry, kopf.Memo(op=reconciler.Operator(
        config=config, kube=kube, clock=clock or opclock.RealClock(),
        metrics=metrics or opmetrics.OperatorMetrics()))


async def _follow(flag: Any, stop: asyncio.Event) -> None:
    """Set ``stop`` when an outside stop flag (threading.Event or asyncio.Event) is set."""
    while flag is not None and not stop.is_set():
        if flag.is_set():
            stop.set()
            return
        await asyncio.sleep(0.1)


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
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S")
    return f"{user}@{socket.gethostname()}/{now}/{secrets.token_hex(2)}"


async def run_async(config: settings.OperatorConfig, kube: kubeapi.Kube,
                    registry: kopf.OperatorRegistry, *,
                    stop_flag: Any = None, ready_flag: Any = None,
                    liveness_endpoint: str | None = None,
                    lease: leader.LeaseConfig | None = None,
                    metrics: opmetrics.OperatorMetrics | None = None,
                    clock: opclock.Clock | None = None) -> bool:
    """Run until stopped. With ``lease``, only as the leader: wait for the
    Lease, run kopf while it is renewed, stop when it is lost (returns False
    then, True on a requested stop). ``clock``: tests move time forward."""
    registry, memo = build(config, kube, registry, metrics, clock)
    op: reconciler.Operator = memo.op
    stop = asyncio.Event()
    follower = asyncio.create_task(_follow(stop_flag, stop))
    elector = None
    keeper = None
    try:
        if lease is not None:
            elector = leader.LeaderElector(kube, lease)
            elector.on_change = op.metrics.set_leader
            kube.may_write = elector.holding
            log.info("waiting for the lease %s/%s as %s", lease.namespace, lease.name, lease.identity)
            if not await elector.acquire(stop):
                return True
            keeper = asyncio.create_task(elector.keep(stop))
            keeper.add_done_callback(lambda _: stop.set())
        else:
            op.metrics.set_leader(True)
        await kopf.operator(
            registry=registry, memo=memo, clusterwide=True, standalone=True,
            identity=operator_identity(),  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
            stop_flag=stop, ready_flag=ready_flag, liveness_endpoint=liveness_endpoint,
        )
        return elector is None or elector.holding() or (stop_flag is not None and stop_flag.is_set())
    finally:
        follower.cancel()
        if keeper is not None:
            keeper.cancel()
        if elector is not None:
            # Inline, not in the executor: its threads may all be busy with
            # reconciles, and a stop must not wait for them (two short requests).
            elector.release()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kpod-operator", description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default=None,
                        help="namespace of the fleet CR and the agent DaemonSet "
                             "(default: $KPOD_OPERATOR_NAMESPACE or kpod-system)")
    parser.add_argument("--verbose", action="store_true", help="debug logging (as --log-level debug)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {runtime_info.version()}")
    parser.add_argument("--log-format", choices=runtime_info.LOG_FORMATS,
                        default=os.environ.get("KPOD_LOG_FORMAT", "text"),
                        help="text (default) or json, one object per line")
    parser.add_argument("--log-level", choices=runtime_info.LOG_LEVELS,
                        default=os.environ.get("KPOD_LOG_LEVEL", "info"))
    parser.add_argument("--listen", type=_host_port, default=os.environ.get("KPOD_OPERATOR_LISTEN", "0.0.0.0:8080"),
                        metavar="HOST:PORT", help="/metrics and /healthz (default 0.0.0.0:8080; empty: off)")
    parser.add_argument("--liveness", default=os.environ.get("KPOD_OPERATOR_LIVENESS", ""),
                        help="kopf's own liveness endpoint, e.g. http://0.0.0.0:8081/healthz (default: off)")
    parser.add_argument("--leader-election", action=argparse.BooleanOptionalAction, default=True,
                        help="run only while holding the Lease kpod-operator in the namespace (default: on)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    runtime_info.configure_logging(args.log_format, "debug" if args.verbose else args.log_level)
    config = settings.from_env(args.namespace)
    kube = kubeapi.Kube.from_environment()
    lease = settings.lease_from_env(config.namespace) if args.leader_election else None
    kube.api.user_agent = f"kpod-operator/{runtime_info.version()}" + (f" ({lease.identity})" if lease else "")
    metrics = opmetrics.OperatorMetrics()
    try:
        server = opmetrics.serve(metrics, *args.listen) if args.listen else None
    except OSError as exc:
        print(f"kpod-operator: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc.strerror}", file=sys.stderr)
        sys.exit(1)
    # The default registry carries kopf's login via the kubernetes client.
    kept = asyncio.run(run_async(config, kube, kopf.get_default_registry(),
                                 liveness_endpoint=args.liveness or None, lease=lease, metrics=metrics))
    if server is not None:
        server.shutdown()
    if not kept:
        sys.exit(1)  # lost the lease: start again as a standby


def _host_port(value: str) -> tuple[str, int] | None:
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {value!r}")
    return (host.strip("[]") or "0.0.0.0", int(port))


if __name__ == "__main__":
    main()
