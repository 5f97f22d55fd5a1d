"""kpod-agent: per-pod kernel metrics on one node.

    kpod-agent --config PATH [--node-name NAME] [--listen HOST:PORT]
    kpod-agent --configmap NAMESPACE/NAME ...      (in a cluster)
    kpod-agent top [--url URL]                     (live per-pod view)
    kpod-agent topology --url URL[,URL...]         (service graph of one or several agents)
    kpod-agent --print-bpf NAME                    (the C of one collector)
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kpod_agent.version import version

log = logging.getLogger("kpod_agent")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {value!r}")
    return (host.strip("[]") or "0.0.0.0", int(port))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpod-agent",
        description="Per-pod kernel metrics: loads one BPF program per collector and serves Prometheus metrics.",
        epilog="examples:\n"
               "  sudo kpod-agent --config examples/standalone.yaml\n"
               "  kpod-agent top --url http://127.0.0.1:9090\n"
               "  kpod-agent topology --url http://127.0.0.1:9090 --format dot\n"
               "  kpod-agent --print-bpf syscall",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="PATH", help="node config file (watched; SIGHUP forces a re-read)")
    source.add_argument("--configmap", metavar="NAMESPACE/NAME",
                        help="watch this ConfigMap (key agent.yaml) through the API")
    source.add_argument("--print-bpf", metavar="COLLECTOR", help="print the BPF C of a collector and exit")
    parser.add_argument("--node-name", default=os.environ.get("NODE_NAME") or socket.gethostname(),
                        help="node label of every series (default: $NODE_NAME, then the hostname)")
    parser.add_argument("--listen", type=parse_listen, default=("0.0.0.0", 9090), metavar="HOST:PORT",
                        help="HTTP address for /metrics /healthz /readyz /config (default 0.0.0.0:9090)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("--log-level", default=os.environ.get("KPOD_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default=os.environ.get("KPOD_LOG_FORMAT", "text"),
                        choices=["text", "json"], help="text (default) or json, one object per line")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["top"]:
        from kpod_agent import top

        return top.main(argv[1:])
    if argv[:1] == ["topology"]:
        from kpod_agent import topology_cli

        return topology_cli.main(argv[1:])
    args = build_parser().parse_args(argv)
    from kpod_agent import redact, runtime_info

    runtime_info.configure_logging(args.log_format, args.log_level)

    redact.install()  # no URL credentials in the log, whoever logs them
    if args.print_bpf:
        return print_bpf(args.print_bpf)
    if not args.config and not args.configmap:
        build_parser().error("one of --config PATH or --configmap NAMESPACE/NAME is required")
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


def print_bpf(name: str) -> int:
    """The C a collector compiles with the default config, flags first."""
    from kpod_agent import cgroups
    from kpod_agent.collectors import REGISTRY
    from kpod_agent.collectors.base import BpfCollector, CollectorContext
    from kpod_agent.config import AgentConfig

    cls = REGISTRY.get(name)
    if cls is None or not issubclass(cls, BpfCollector) or cls.source is None:
        print(f"kpod-agent: no BPF collector named {name!r}; BPF collectors: "
              f"{', '.join(n for n, c in REGISTRY.items() if getattr(c, 'source', None))}", file=sys.stderr)
        return 2
    try:
        layout = cgroups.detect_layout()
    except cgroups.CgroupError:
        layout = cgroups.CgroupLayout(unified=Path("/sys/fs/cgroup"))
    collector = cls(CollectorContext(layout=layout))
    config = AgentConfig()
    print(f"// {cls.source} as compiled, with: {' '.join(collector.cflags(config))}")
    print(collector.bpf_text(config))
    return 0


def run(args: argparse.Namespace) -> int:
    from kpod_agent import preflight

    try:
        preflight.run_all()
    except preflight.PreflightError as exc:
        print(f"kpod-agent: {exc}", file=sys.stderr)
        return 1

    from prometheus_client import CollectorRegistry

    from kpod_agent.agent import Agent
    from kpod_agent.exporter import KpodCollector
    from kpod_agent.server import AgentHTTPServer

    agent = Agent(node_name=args.node_name, discovery_factory=_discovery_factory(args.node_name))
    agent.pusher_factory = _pusher_factory(agent)
    registry = CollectorRegistry(auto_describe=False)
    exporter = KpodCollector(agent)
    registry.register(exporter)
    try:
        server = AgentHTTPServer(args.listen, agent, registry, metrics=exporter.exposition)
    except OSError as exc:
        print(f"kpod-agent: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc.strerror}", file=sys.stderr)
        return 1

    stop = threading.Event()
    source: Any
    if args.config:
        from kpod_agent.reload import FileSource

        source = FileSource(args.config, agent.submit, agent.reject)
        if not os.path.exists(args.config):
            print(f"kpod-agent: config file {args.config} does not exist", file=sys.stderr)
            return 1
    else:
        from kpod_agent.kube import ConfigMapSource, api_client

        namespace, _, name = args.configmap.partition("/")
        if not namespace or not name:
            print(f"kpod-agent: --configmap wants NAMESPACE/NAME, got {args.configmap!r}", file=sys.stderr)
            return 2
        source = ConfigMapSource(api_client(), namespace, name, agent.submit, agent.reject)
        _attach_status_publisher(agent)

    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP and hasattr(source, "trigger"):
            log.info("SIGHUP: re-reading the config")
            source.trigger()
        else:
            stop.set()

    # Before the first read: it compiles BPF for seconds, and a SIGHUP then
    # (default action: terminate) would kill the agent it meant to reload.
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if args.config:
        source.read_once()
        if agent.config is None:
            print(f"kpod-agent: {agent.reloads.last_error}", file=sys.stderr)
            print("kpod-agent: fix the file; it is watched and will be applied when valid", file=sys.stderr)

    source.start()
    server.start()
    host, port = server.server_address[:2]
    log.info("serving http://%s:%d/metrics (node %s)", host, port, args.node_name)
    if sys.stderr.isatty() or os.environ.get("KPOD_BANNER"):
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        attached = ", ".join(agent.attached()) or "none yet"
        print(f"\nkpod-agent is running on node {args.node_name} (collectors: {attached})\n"
              f"  metrics:   curl http://{shown}:{port}/metrics\n"
              f"  status:    curl http://{shown}:{port}/config\n"
              f"  live view: {sys.argv[0] if sys.argv[0].endswith('kpod-agent') else 'kpod-agent'} top "
              f"--url http://{shown}:{port}\n"
              f"  stop:      Ctrl-C (detaches every probe)\n", file=sys.stderr, flush=True)
    loop = threading.Thread(target=_collection_loop, args=(agent, stop, exporter.prewarm), name="collect",
                            daemon=True)
    loop.start()
    # Wake up regularly: signal handlers run on the main thread between waits.
    while not stop.wait(0.5):
        pass
    log.info("shutting down: detaching probes")
    source.stop()
    server.shutdown()
    agent.shutdown()
    return 0


STATUS_REPORT_SECONDS = 15.0


def _collection_loop(agent: Any, stop: threading.Event, after_cycle: Any = None) -> None:
    last_report = time.monotonic()
    while not stop.is_set():
        try:
            agent.collect_due()
            if after_cycle is not None:
                after_cycle()  # /metrics rendered here, once, not by each scraper
        except Exception:
            log.exception("collection cycle failed")
        if agent.on_applied and time.monotonic() - last_report >= STATUS_REPORT_SECONDS:
            # Collector and discovery state also change between applies; the
            # publisher writes only when the report differs.
            last_report = time.monotonic()
            status = agent.status()
            for report in agent.on_applied:
                try:
                    report(status)
                except Exception:
                    log.exception("status report failed")
        config = agent.config
        tick = 1.0
        if config is not None:
            names = list(config.node_collectors())
            if names:
                tick = min(1.0, min(config.interval_of(n) for n in names))
        stop.wait(max(0.1, tick))


def _discovery_factory(node_name: str) -> Any:
    """Informer discovery needs an API client; the other modes do not."""

    def factory(config: Any, resolver: Any, on_change: Any) -> Any:
        from kpod_agent.discovery import Discovery

        client = None
        if config.discovery.mode == "informer":
            from kpod_agent.kube import api_client

            client = api_client()
        return Discovery(config.discovery, node_name, resolver, on_change=on_change, api_client=client)

    return factory


def _pusher_factory(agent: Any) -> Any:
    """The OTLP pusher of the config's `otlp`; its packages are imported only when it is on."""

    def factory(config: Any) -> Any:
        from kpod_agent import otlp

        return otlp.OtlpPusher(config, lambda: agent.view, agent.count_export, start_ns)

    start_ns = time.time_ns()
    return factory


def _attach_status_publisher(agent: Any) -> None:
    try:
        from kpod_agent.node_status import PodStatusPublisher
    except ImportError:
        return
    pod, namespace = os.environ.get("POD_NAME"), os.environ.get("POD_NAMESPACE")
    if not pod or not namespace:
        log.info("POD_NAME/POD_NAMESPACE not set: not publishing the agent status on the pod")
        return
    import kubernetes

    from kpod_agent.kube import api_client

    publisher = PodStatusPublisher(kubernetes.client.CoreV1Api(api_client()), pod, namespace)
    agent.on_applied.append(publisher.publish)


if __name__ == "__main__":
    sys.exit(main())
