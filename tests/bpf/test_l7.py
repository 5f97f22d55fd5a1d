"""The l7 collector against real servers and clients in fake pods on a pod
network: N requests of one operation from the client pod show as exactly N
client requests there, N server requests in the server pod, none in the
neighbour pod, with the right operation and status, and latency histograms
whose count is N and whose sum fits in the time the client took."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kpod_agent import btf
from kpod_agent.agent import Agent
from tests.support import l7_servers
from tests.support.kernel_node import KernelNode
from tests.support.pod_network import PodNet, pod_network
from tests.support.scraper import Scraper

REQUESTS = "kpod_l7_requests_total"
DURATION = "kpod_l7_request_duration_seconds"
N = 7
# network beside l7: the hot-reload tests check its counters survive l7 changes.
COLLECTORS = {"l7": {}, "network": {}}


@dataclass
class Pods:
    server: PodNet
    client: PodNet
    neighbour: PodNet


@pytest.fixture(scope="module")
def pods(node: KernelNode) -> Iterator[Pods]:
    with pod_network() as network:
        yield Pods(*(network.attach(node.add_pod(f"l7-{name}", "team-l7")) for name in ("srv", "cli", "nbr")))


@pytest.fixture(scope="module")
def scraper(node: KernelNode, pods: Pods) -> Iterator[Scraper]:
    agent = Agent(node_name="node-1")
    assert agent.apply(node.config(collectors=COLLECTORS))
    assert agent.states["l7"].collector is not None, agent.states["l7"].error
    scraper = Scraper(agent)
    scraper.sync()
    yield scraper
    agent.shutdown()


@pytest.fixture(scope="module")
def servers(pods: Pods, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.Popen]]:
    """Every server once for the module, in the server pod (started before
    the agent counts, so their start-up is no request of the tests)."""
    tmp = tmp_path_factory.mktemp("l7servers")
    started: dict[str, subprocess.Popen] = {}
    try:
        srv = pods.server
        started["http"] = l7_servers.start_http(srv, tmp)
        started["dns"] = l7_servers.start_dns(srv, tmp)
        started["redis"] = l7_servers.start_redis(srv, tmp)
        started["mysql"] = l7_servers.start_mysql(srv, tmp)
        started["postgres"] = l7_servers.start_postgres(srv, tmp)
        started["kafka"] = l7_servers.start_responder(srv, tmp, "kafka", l7_servers.KAFKA_PORT)
        started["mongodb"] = l7_servers.start_responder(srv, tmp, "mongodb", l7_servers.MONGODB_PORT)
        yield started
    finally:
        for proc in started.values():
            l7_servers.stop(proc)


def _values(scraper: Scraper, pods: Pods, protocol: str) -> dict[tuple[str, ...], float]:
    """Every l7 sample of `protocol` in the three pods: (pod, series, labels...) -> value."""
    names = {pods.server.pod.name: "srv", pods.client.pod.name: "cli", pods.neighbour.pod.name: "nbr"}
    found: dict[tuple[str, ...], float] = {}
    for family in scraper.registry.collect():
        for s in family.samples:
            if s.labels.get("protocol") != protocol or s.labels.get("pod") not in names:
                continue
            if s.name not in (REQUESTS, DURATION + "_count", DURATION + "_sum"):
                continue
            key = (names[s.labels["pod"]], s.name, s.labels["direction"], s.labels["operation"],
                   s.labels.get("status", ""))
            found[key] = s.value
    return found


def _delta(after: dict[tuple[str, ...], float], before: dict[tuple[str, ...], float]) -> dict[tuple[str, ...], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def _exchange(scraper: Scraper, pods: Pods, protocol: str, argv: list[str]
              ) -> tuple[dict[tuple[str, ...], float], float]:
    """Run the client in the client pod; the l7 samples that changed and the
    client's wall time."""
    scraper.sync()
    before = _values(scraper, pods, protocol)
    started = time.monotonic()
    result = pods.client.run(argv, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode in (0, 1), result.stderr.decode()[-2000:]
    scraper.sync()
    return _delta(_values(scraper, pods, protocol), before), elapsed


def _assert_exact(delta: dict[tuple[str, ...], float], elapsed: float, operation: str, status: str) -> None:
    for pod, direction in (("srv", "server"), ("cli", "client")):
        assert delta.get((pod, REQUESTS, direction, operation, status)) == N, delta
        assert delta.get((pod, DURATION + "_count", direction, operation, "")) == N, delta
        latency = delta.get((pod, DURATION + "_sum", direction, operation, ""), 0.0)
        assert 0 < latency <= elapsed, (latency, elapsed)
    assert not [k for k in delta if k[0] == "nbr"], delta
    # Nothing else counted for this exchange's operation in the wrong direction.
    assert not [k for k in delta if k[1] == REQUESTS and k[3] == operation and k[4] != status], delta


def _url(pods: Pods, path: str) -> str:
    return f"http://{pods.server.ip}:{l7_servers.HTTP_PORT}{path}"


def _requests_get(pods: Pods) -> list[str]:
    code = ("import requests, sys\ns = requests.Session()\n"
            f"for _ in range({N}): assert s.get(sys.argv[1]).status_code == 200\n")
    return [sys.executable, "-c", code, _url(pods, "/ok")]


def _dig(pods: Pods, names: list[str]) -> list[str]:
    return ["dig", "+tries=1", "+time=5", f"@{pods.server.ip}", *[arg for name in names for arg in (name, "A")]]


def _redis(pods: Pods, *commands: str) -> list[str]:
    return ["sh", "-c", f"printf '{''.join(c + chr(92) + 'n' for c in commands)}' | "
            f"redis-cli -h {pods.server.ip} -p {l7_servers.REDIS_PORT}"]


def _mariadb(pods: Pods, sql: str) -> list[str]:
    # Statements on stdin: with --force the client goes on after an error.
    return ["sh", "-c", f"echo '{sql * N}' | mariadb --no-defaults -h {pods.server.ip} "
            f"-P {l7_servers.MYSQL_PORT} -u root --skip-ssl --force"]


def _psql(pods: Pods, sql: str) -> list[str]:
    return ["psql", "-X", "-q", "-h", pods.server.ip, "-p", str(l7_servers.POSTGRES_PORT), "-U", "postgres",
            "-d", "postgres", *[arg for _ in range(N) for arg in ("-c", sql)]]


# id -> (protocol, the client's argv, operation, status): N requests each.
EXCHANGES: dict[str, tuple[str, Callable[[Pods], list[str]], str, str]] = {
    # One curl, one keep-alive connection, N requests.
    "http-404-curl": ("http", lambda p: ["curl", "-s", "-o", "/dev/null", *[_url(p, "/missing")] * N], "GET", "404"),
    "http-200-requests": ("http", _requests_get, "GET", "200"),
    "dns-nxdomain": ("dns", lambda p: _dig(p, [f"n{i}.missing.test" for i in range(N)]), "A", "NXDOMAIN"),
    "dns-noerror": ("dns", lambda p: _dig(p, ["known.test"] * N), "A", "NOERROR"),
    # INCR of a string is an error reply.
    "redis-error": ("redis", lambda p: _redis(p, "SET word abc", *["INCR word"] * N), "INCR", "error"),
    "redis-ok": ("redis", lambda p: _redis(p, *["LPUSH list x"] * N), "LPUSH", "ok"),
    "mysql-error": ("mysql", lambda p: _mariadb(p, "DELETE FROM nosuch.t;"), "DELETE", "error"),
    "mysql-ok": ("mysql", lambda p: _mariadb(p, "DO 1;"), "DO", "ok"),
    "postgres-error": ("postgres", lambda p: _psql(p, "UPDATE nosuch SET a = 1"), "UPDATE", "error"),
    "postgres-ok": ("postgres", lambda p: _psql(p, "SELECT 1"), "SELECT", "ok"),
}


@pytest.mark.parametrize("case", list(EXCHANGES))
def test_requests_counted_exactly(scraper: Scraper, pods: Pods, servers: dict[str, subprocess.Popen],
                                  case: str) -> None:
    protocol, argv, operation, status = EXCHANGES[case]
    delta, elapsed = _exchange(scraper, pods, protocol, argv(pods))
    _assert_exact(delta, elapsed, operation, status)


def test_regular_files_are_never_classified(scraper: Scraper, pods: Pods, tmp_path: Path) -> None:
    """Files that hold an HTTP request and a response, written and read in
    the client pod: no socket, nothing counted."""
    request, response = tmp_path / "request.txt", tmp_path / "response.txt"
    response.write_text("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    code = (f"for _ in range({N}):\n"
            f"    open({str(request)!r}, 'w').write('GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
            f"    open({str(response)!r}).read()\n")
    delta, _ = _exchange(scraper, pods, "http", [sys.executable, "-c", code])
    assert delta == {}


def _warm_exchange(scraper: Scraper, pods: Pods, protocol: str, setup: str, request: str
                   ) -> tuple[dict[tuple[str, ...], float], float]:
    """A Python client that connects first (handshakes, bootstrap requests)
    and then, on a line from the test, makes N requests: only those are
    in the delta."""
    code = (f"import sys\n{setup}\nprint('ready', flush=True)\nsys.stdin.readline()\n"
            f"for _ in range({N}):\n    {request}\nprint('done', flush=True)\n")
    proc = pods.client.spawn([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == b"ready"
        scraper.sync()
        before = _values(scraper, pods, protocol)
        started = time.monotonic()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == b"done"
        elapsed = time.monotonic() - started
        scraper.sync()
        return _delta(_values(scraper, pods, protocol), before), elapsed
    finally:
        proc.stdin.close()
        proc.stdout.close()
        proc.wait(timeout=30)


def _kafka(pods: Pods) -> str:
    return ("from kafka import KafkaConsumer\n"
            f"c = KafkaConsumer(bootstrap_servers='{pods.server.ip}:{l7_servers.KAFKA_PORT}', "
            "api_version=(1, 0, 0), request_timeout_ms=10000)\nc.topics()")


def _mongo(pods: Pods) -> str:
    return ("import pymongo\n"
            f"m = pymongo.MongoClient('mongodb://{pods.server.ip}:{l7_servers.MONGODB_PORT}/?directConnection=true',"
            " heartbeatFrequencyMS=600000)\nm.admin.command('ping')")


# id -> (protocol, client set-up, one request, operation, status). The
# responders read each length prefix (Kafka size, MongoDB header) first;
# Kafka pairs by correlation id, MongoDB by request id.
WARM_EXCHANGES: dict[str, tuple[str, Callable[[Pods], str], str, str, str]] = {
    "kafka-metadata": ("kafka", _kafka, "assert c.topics() == set()", "Metadata", "ok"),
    "mongodb-ping": ("mongodb", _mongo, "m.admin.command('ping')", "ping", "ok"),
    "mongodb-insert-refused": ("mongodb", _mongo, "try:\n        m.test.command('insert', 'c', documents=[{}])\n"
                               "    except pymongo.errors.OperationFailure:\n        pass", "insert", "error"),
}


@pytest.mark.parametrize("case", list(WARM_EXCHANGES))
def test_official_clients_against_responders(scraper: Scraper, pods: Pods, servers: dict[str, subprocess.Popen],
                                             case: str) -> None:
    """kafka-python and pymongo, after their handshakes, against the minimal responders."""
    protocol, setup, request, operation, status = WARM_EXCHANGES[case]
    delta, elapsed = _warm_exchange(scraper, pods, protocol, setup(pods), request)
    _assert_exact(delta, elapsed, operation, status)


def _curl(pods: Pods) -> list[str]:
    return ["curl", "-s", "-o", "/dev/null", *[f"http://{pods.server.ip}:{l7_servers.HTTP_PORT}/ok"] * N]


def test_protocols_change_without_reattach(scraper: Scraper, node: KernelNode, pods: Pods,
                                           servers: dict[str, subprocess.Popen]) -> None:
    agent = scraper.agent
    l7_collector, network = agent.states["l7"].collector, agent.states["network"].collector
    sent = "kpod_net_tcp_bytes_sent_total"
    scraper.sync()
    bytes_before = scraper.pod_value(sent, pods.client.pod)
    try:
        assert agent.apply(node.config(collectors={"l7": {"protocols": ["dns"]}, "network": {}}))
        assert agent.states["l7"].collector is l7_collector, "a protocol change must not re-attach"
        delta, _ = _exchange(scraper, pods, "http", _curl(pods))
        assert delta == {}, "http is off"
        delta, elapsed = _exchange(scraper, pods, "dns", _dig(pods, ["known.test"] * N))
        _assert_exact(delta, elapsed, "A", "NOERROR")
    finally:
        assert agent.apply(node.config(collectors=COLLECTORS))
    assert agent.states["l7"].collector is l7_collector
    delta, elapsed = _exchange(scraper, pods, "http", _curl(pods))
    _assert_exact(delta, elapsed, "GET", "200")
    assert agent.states["network"].collector is network
    assert scraper.pod_value(sent, pods.client.pod) > bytes_before  # kept, and still counting


def test_l7_off_and_on_keeps_other_collectors(scraper: Scraper, node: KernelNode, pods: Pods,
                                             servers: dict[str, subprocess.Popen]) -> None:
    agent = scraper.agent
    network = agent.states["network"].collector
    sent = "kpod_net_tcp_bytes_sent_total"
    scraper.sync()
    bytes_before = scraper.pod_value(sent, pods.client.pod)
    try:
        assert agent.apply(node.config(collectors={"network": {}}))
        scraper.sync()
        assert agent.states.get("l7") is None or agent.states["l7"].collector is None
        assert not scraper.series(REQUESTS)
        assert pods.client.run(_curl(pods)).returncode == 0
    finally:
        assert agent.apply(node.config(collectors=COLLECTORS))
    assert agent.states["l7"].collector is not None, agent.states["l7"].error
    delta, elapsed = _exchange(scraper, pods, "http", _curl(pods))
    _assert_exact(delta, elapsed, "GET", "200")
    assert agent.states["network"].collector is network
    assert scraper.pod_value(sent, pods.client.pod) > bytes_before


def test_series_per_pod_with_every_protocol(scraper: Scraper, pods: Pods,
                                            servers: dict[str, subprocess.Popen]) -> None:
    """With every protocol used, the server and client pods carry series of
    each, within the fixed tables; prints the count per pod (pytest -s) that
    docs/l7.md quotes. Run after the module's other tests it counts all
    their operations and statuses too."""
    from kpod_agent.collectors import l7

    ip = pods.server.ip
    for argv in (_curl(pods), _dig(pods, ["known.test"]), _redis(pods, "PING"),
                 _mariadb(pods, "DO 1;"), _psql(pods, "SELECT 1"),
                 [sys.executable, "-c", f"from kafka import KafkaConsumer\nKafkaConsumer(bootstrap_servers="
                  f"'{ip}:{l7_servers.KAFKA_PORT}', api_version=(1, 0, 0)).topics()"],
                 [sys.executable, "-c", f"import pymongo\npymongo.MongoClient('mongodb://{ip}:"
                  f"{l7_servers.MONGODB_PORT}/?directConnection=true').admin.command('ping')"]):
        result = pods.client.run(argv)
        assert result.returncode == 0, (argv, result.stderr[-1000:])
    scraper.sync()
    for net, direction in ((pods.server, "server"), (pods.client, "client")):
        requests = [s for s in scraper.series(REQUESTS) if s["pod"] == net.pod.name]
        histograms = {tuple(sorted((k, v) for k, v in s.items() if k != "le"))
                      for s in scraper.series(DURATION + "_bucket") if s["pod"] == net.pod.name}
        assert {s["protocol"] for s in requests} == set(l7.L7_PROTOCOLS), requests
        assert {s["direction"] for s in requests} == {direction}
        assert len(requests) + len(histograms) <= l7.series_bound()
        print(f"\n{direction} pod: {len(requests)} request series + {len(histograms)} latency histograms "
              f"(bound per pod: {l7.series_bound()})")
    assert not [s for s in scraper.series(REQUESTS) if s["pod"] == pods.neighbour.pod.name]


def test_topology_edge_takes_its_protocol_and_requests_from_l7(scraper: Scraper, pods: Pods,
                                                              tmp_path: Path) -> None:
    """An HTTP server on a port no table names: the edge client -> server is
    `http` only because l7 parsed it, with exactly N requests on one
    connection, seen the same by both ends' sockets; none from the neighbour."""
    port = 18081
    server = l7_servers.start_http(pods.server, tmp_path, port=port)
    try:
        code = ("import requests, sys\ns = requests.Session()\n"
                f"for _ in range({N}): assert s.get(sys.argv[1]).status_code == 200\n")
        result = pods.client.run([sys.executable, "-c", code, f"http://{pods.server.ip}:{port}/ok"], timeout=60)
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        scraper.sync()
        edges = [e for e in scraper.agent.view.topology["edges"] if e["port"] == port]
        assert [(e["source"].get("pod"), e["destination"].get("pod")) for e in edges] == [
            (pods.client.pod.name, pods.server.pod.name)], edges
        (edge,) = edges
        assert (edge["protocol"], edge["requests"], edge["connections"]) == ("http", N, 1), edge
        assert {side: counts["requests"] for side, counts in edge["sides"].items()} == {"client": N, "server": N}
        assert {side: counts["protocols"] for side, counts in edge["sides"].items()} == {
            "client": {"http": N}, "server": {"http": N}}
    finally:
        l7_servers.stop(server)


def test_without_btf_the_perf_event_tracepoints_count_the_same(node: KernelNode, pods: Pods,
                                                               servers: dict[str, subprocess.Popen],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without BTF: no struct sock offsets, so the sock tracepoints'
    own record (their perf-event form) is used, and counts are as exact."""
    def no_btf(*_: object) -> int:
        raise btf.BtfError("cannot read /sys/kernel/btf/vmlinux: No such file or directory")

    monkeypatch.setattr(btf, "member_offset", no_btf)
    agent = Agent(node_name="node-1")
    try:
        assert agent.apply(node.config(collectors={"l7": {}}))
        collector = agent.states["l7"].collector
        assert collector is not None and not collector.raw_tracepoints, agent.states["l7"].error
        protocol, argv, operation, status = EXCHANGES["http-404-curl"]
        delta, elapsed = _exchange(Scraper(agent), pods, protocol, argv(pods))
        _assert_exact(delta, elapsed, operation, status)
    finally:
        agent.shutdown()
