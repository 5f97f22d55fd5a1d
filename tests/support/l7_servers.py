"""Real servers inside fake pods, for the l7 collector's tests and bench.

Each `start_*` spawns the server in a pod (its cgroups and network
namespace), waits until its port listens (checked with `ss` in the pod's
namespace: no request is made, so nothing is counted before the test's own
traffic) and returns the process. The caller stops it with `stop()`.
Servers that refuse to run as root (PostgreSQL) run as their Debian user.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from tests.support.pod_network import PodNet

HTTP_PORT, DNS_PORT, REDIS_PORT, MYSQL_PORT, POSTGRES_PORT = 8080, 53, 6379, 3306, 5432
KAFKA_PORT, MONGODB_PORT = 9092, 27017


class ServerError(RuntimeError):
    pass


def wait_listening(net: PodNet, port: int, proc: subprocess.Popen, udp: bool = False, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    flags = "-Hlun" if udp else "-Hltn"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log_path = getattr(proc, "log_path", None)
            out = log_path.read_text(errors="replace")[-2000:] if log_path else ""
            raise ServerError(f"server exited ({proc.returncode}) before listening on {port}: {out}")
        out = subprocess.run(["ip", "netns", "exec", net.netns, "ss", flags, f"sport = :{port}"],
                             capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.1)
    raise ServerError(f"nothing listens on {net.ip}:{port} after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    remove = getattr(proc, "remove_dir", None)
    if remove is not None:
        shutil.rmtree(remove, ignore_errors=True)


def _spawn(net: PodNet, tmp: Path, name: str, argv: list[str]) -> subprocess.Popen:
    """The server's output goes to tmp/<name>.log: a pipe nobody reads
    would stall a chatty server."""
    log_path = tmp / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = net.spawn(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def _as_user(user: str, argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv]


HTTP_SERVER = textwrap.dedent("""
    import http.server, sys

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b"ok\\n" if self.path == "/ok" else b"not found\\n"
            self.send_response(200 if self.path == "/ok" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
""")


def start_http(net: PodNet, tmp: Path, port: int = HTTP_PORT) -> subprocess.Popen:
    """Python's http.server: 200 for /ok, 404 for anything else, keep-alive."""
    proc = _spawn(net, tmp, "http", ["python3", "-c", HTTP_SERVER, str(port)])
    wait_listening(net, port, proc)
    return proc


def start_dns(net: PodNet, tmp: Path, port: int = DNS_PORT) -> subprocess.Popen:
    """dnsmasq answering known.test itself and NXDOMAIN for the rest of .test."""
    proc = _spawn(net, tmp, "dnsmasq", ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--port={port}",
                        "--listen-address=" + net.ip, "--bind-interfaces", "--no-resolv", "--no-hosts",
                        "--local=/test/", "--address=/known.test/10.9.9.9", "--user=root",
                        "--pid-file=", "--log-facility=-", "--cache-size=0"])
    wait_listening(net, port, proc, udp=True)
    return proc


def start_redis(net: PodNet, tmp: Path, port: int = REDIS_PORT) -> subprocess.Popen:
    proc = _spawn(net, tmp, "redis", ["redis-server", "--port", str(port), "--bind", "0.0.0.0",
                                      "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", str(tmp)])
    wait_listening(net, port, proc)
    return proc


def start_mysql(net: PodNet, tmp: Path, port: int = MYSQL_PORT) -> subprocess.Popen:
    """MariaDB in a private datadir, grants off (any client is root); it
    runs as root when told to, like in a container."""
    datadir = tmp / "mariadb"
    datadir.mkdir()
    init = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=root",
                           f"--tmpdir={datadir}", "--skip-test-db", "--auth-root-authentication-method=normal"],
                          capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        raise ServerError(f"mariadb-install-db: {init.stderr[-2000:]}")
    proc = _spawn(net, tmp, "mariadb", [
        "mariadbd", "--no-defaults", f"--datadir={datadir}", f"--socket={datadir}/sock", f"--port={port}",
        "--bind-address=0.0.0.0", "--user=root", f"--tmpdir={datadir}", "--skip-grant-tables",
        "--skip-name-resolve", "--innodb-buffer-pool-size=16M", "--skip-log-bin", f"--pid-file={datadir}/pid"])
    wait_listening(net, port, proc)
    return proc


def start_postgres(net: PodNet, tmp: Path, port: int = POSTGRES_PORT) -> subprocess.Popen:
    """PostgreSQL in a private datadir as the postgres user (it refuses
    root), trust auth. The datadir is a directory of its own under /tmp:
    pytest's are private to root. `stop()` removes it."""
    datadir = Path(tempfile.mkdtemp(prefix="kpod-pg-", dir="/tmp"))
    shutil.chown(datadir, "postgres", "postgres")
    bindir = _postgres_bindir()
    init = subprocess.run(_as_user("postgres", [str(bindir / "initdb"), "-D", str(datadir), "--auth=trust",
                                                "-U", "postgres", "--no-sync"]),
                          capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        raise ServerError(f"initdb: {init.stderr[-2000:]}")
    with open(datadir / "pg_hba.conf", "a") as hba:
        hba.write("host all all 0.0.0.0/0 trust\n")
    proc = _spawn(net, tmp, "postgres", _as_user("postgres", [
        str(bindir / "postgres"), "-D", str(datadir), "-p", str(port), "-k", str(datadir),
        "-c", "listen_addresses=*", "-c", "fsync=off", "-c", "shared_buffers=16MB"]))
    proc.remove_dir = datadir  # type: ignore[attr-defined]
    wait_listening(net, port, proc)
    return proc


def start_responder(net: PodNet, tmp: Path, kind: str, port: int) -> subprocess.Popen:
    """The Kafka or MongoDB responder of wire_responders.py."""
    script = Path(__file__).with_name("wire_responders.py")
    proc = _spawn(net, tmp, kind, [sys.executable, str(script), kind, str(port)])
    wait_listening(net, port, proc)
    return proc


def _postgres_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        raise ServerError("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/postgres)")
    return found[-1].parent
