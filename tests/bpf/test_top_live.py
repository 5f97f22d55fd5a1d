"""`kpod-agent top` against a real agent on this kernel, read over HTTP.

A known workload runs in one fake pod between top's two scrapes; the rates
top prints must be that count over the time top measured, and 0 in the idle
pod. The live mode is driven through a pseudo-terminal like a user would.
"""
from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.registry import Collector

from kpod_agent import top
from kpod_agent.agent import Agent
from kpod_agent.server import AgentHTTPServer
from tests.support.kernel_node import FakePod, KernelNode
from tests.support.scraper import Scraper
from tests.unit.test_top import assert_shown, parse_number

N = 1009  # getppid calls: a prime no other activity produces
TCP_BYTES = 1_000_000
INTERVAL = 3.0  # between top's scrapes: the workload and a collection fit in it many times over
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b[()][0-9A-B]|\x1b[=>78]")


class ScrapeClock(Collector):
    """Notes the time of each /metrics request; adds no series."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.changed = threading.Condition()

    def collect(self):  # type: ignore[no-untyped-def]
        with self.changed:
            self.times.append(time.monotonic())
            self.changed.notify_all()
        return iter(())

    def nth_scrape(self, count: int, timeout: float) -> float:
        """When the `count`-th scrape came (waits for it)."""
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.times) >= count, timeout), \
                f"top made {len(self.times)} scrapes, expected {count}"
            return self.times[count - 1]


class LiveAgent:
    def __init__(self, scraper: Scraper, server: AgentHTTPServer, clock: ScrapeClock) -> None:
        self.scraper, self.server, self.clock = scraper, server, clock

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def pods(node: KernelNode) -> dict[str, FakePod]:
    return {"busy": node.add_pod("busy-pod", "team-a"), "idle": node.add_pod("idle-pod", "team-b")}


@pytest.fixture(scope="module")
def live(node: KernelNode, pods: dict[str, FakePod]) -> Iterator[LiveAgent]:
    agent = Agent(node_name="node-1")
    config = node.config(collectors={n: {"enabled": True} for n in ("cpu", "network", "memory", "syscall")},
                         syscalls=["getppid"])
    assert agent.apply(config)
    failed = {n: s.error for n, s in agent.states.items() if s.collector is None}
    assert not failed, f"collectors failed to attach: {failed}"
    scraper = Scraper(agent)
    scraper.sync()
    clock = ScrapeClock()
    scraper.registry.register(clock)
    server = AgentHTTPServer(("127.0.0.1", 0), agent, scraper.registry)
    server.start()
    yield LiveAgent(scraper, server, clock)
    server.shutdown()
    server.server_close()
    agent.shutdown()


def top_command(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("kpod-agent")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "kpod_agent.main"]
    return [*base, "top", *args]


def rows_of(text: str) -> dict[str, dict[str, str]]:
    keys = [c.key for c in top.COLUMNS]
    found = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) == len(keys) and cells[0] != "NAMESPACE":
            found[cells[1]] = dict(zip(keys, cells, strict=True))
    return found


def test_once_shows_known_rates_in_the_busy_pod_and_zero_in_the_idle_one(
        live: LiveAgent, pods: dict[str, FakePod]) -> None:
    busy = pods["busy"]
    before = len(live.clock.times)
    proc = subprocess.Popen(top_command("--once", "--no-color", "--interval", str(INTERVAL), "--url", live.url,
                                       "--sort", "syscalls"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        live.clock.nth_scrape(before + 1, timeout=60)
        # Between the two scrapes: known work in the busy pod, then a collection.
        busy.workload("getppid", N)
        busy.workload("sleep", 20, 1000)
        server = busy.spawn([str(busy.node.workload), "recv", "0", str(TCP_BYTES)], stdout=subprocess.PIPE)
        assert server.stdout is not None
        port = _listening_port(server)
        busy.workload("send", "127.0.0.1", port, TCP_BYTES)
        server.communicate(timeout=30)
        assert server.returncode == 0
        live.scraper.sync()
        synced = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    second = live.clock.times[before + 1]
    assert synced < second, "the workload did not fit between top's scrapes"

    elapsed = float(re.search(r"rates over (\d+\.\d+) s", out).group(1))  # type: ignore[union-attr]
    assert elapsed >= INTERVAL
    rows = rows_of(out)
    assert set(rows) == {"busy-pod", "idle-pod"}, out
    assert rows["busy-pod"]["namespace"] == "team-a" and rows["idle-pod"]["namespace"] == "team-b"

    def assert_rate(cell: str, count: float) -> None:
        try:
            assert_shown(cell, count / elapsed, elapsed)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {count} over {elapsed} s\n{out}") from None

    busy_row, idle_row = rows["busy-pod"], rows["idle-pod"]
    assert_rate(busy_row["syscalls"], N)
    assert_rate(busy_row["tx"], TCP_BYTES)
    assert_rate(busy_row["rx"], TCP_BYTES)  # the receiver runs in the same pod
    assert parse_number(busy_row["csw"])[0] * elapsed >= 20 - parse_number(busy_row["csw"])[1] * elapsed
    assert busy_row["runq"] != "-"  # 20 wake-ups from sleep waited in the run queue
    assert busy_row["oom"] == "0"
    for key in ("syscalls", "csw", "tx", "rx", "retrans", "errors", "oom"):
        assert idle_row[key] == "0", f"idle pod {key}: {idle_row[key]}\n{out}"
    assert idle_row["runq"] == "-"
    # sorted by syscalls/s: the busy pod first
    assert out.index("busy-pod") < out.index("idle-pod")


def _listening_port(server: subprocess.Popen) -> int:
    """The workload's `recv 0` binds an ephemeral port; find it from the socket table."""
    assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
    inodes = set()
    for fd in os.listdir(f"/proc/{server.pid}/fd"):
        target = os.readlink(f"/proc/{server.pid}/fd/{fd}")
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes and fields[3] == "0A":  # LISTEN
            return int(fields[1].split(":")[1], 16)
    raise AssertionError("the receiver is not listening")


def test_live_view_in_a_terminal(live: LiveAgent, pods: dict[str, FakePod]) -> None:
    """Rows appear, a key changes the sort, q quits with 0: through a real pty."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 160, 0, 0))
    proc = subprocess.Popen(top_command("--interval", "0.5", "--url", live.url),
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True, start_new_session=True,
                            env={**os.environ, "TERM": "xterm-256color"})
    os.close(slave)
    screen = ""

    def read_until(pattern: str, timeout: float = 30) -> str:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, ANSI.sub("", screen)):
                return ANSI.sub("", screen)
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    screen += os.read(master, 65536).decode(errors="replace")
                except OSError:
                    break
        raise AssertionError(f"{pattern!r} never shown; screen:\n{ANSI.sub('', screen)[-3000:]}")

    try:
        text = read_until(r"rates over \d+\.\d+ s")  # a second frame: rates, not just the first scrape
        assert "busy-pod" in text and "idle-pod" in text
        assert "CSW/s ▼" in text  # default sort
        screen = ""
        os.write(master, b"8")  # 8th column: SYSCALLS/s
        read_until(r"SYSCALLS/s ▼")
        os.write(master, b"q")
        assert proc.wait(timeout=10) == 0
        try:
            while select.select([master], [], [], 0.2)[0]:
                screen += os.read(master, 65536).decode(errors="replace")
        except OSError:
            pass
        assert "Traceback" not in screen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
