"""The watched config file replaced by things that are not config files: the
real command, run without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (as in a
DaemonSet with only the BPF capabilities), so file permissions bite as they
would there. The watcher must never block and must apply a file as soon as
it can be read.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.kernel_node import KernelNode
from tests.support.running_agent import RunningAgent, running_agent
from tests.support.waiting import wait_for

# Root without the two capabilities that bypass file permissions.
NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
          "--bounding-set=-dac_override,-dac_read_search"]


class ConfigFileAgent(RunningAgent):
    """The real agent, with the raw document and the error count at hand."""

    def document(self, generation: int) -> bytes:
        doc = self.node.config(generation=generation).model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(doc).encode()

    def errors(self) -> int:
        return int(self.metric("kpod_config_reloads_total", result="error"))


@pytest.fixture(scope="module")
def cli(node: KernelNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfigFileAgent]:
    with running_agent(node, tmp_path_factory.mktemp("cfgfile"), prefix=NO_DAC, kind=ConfigFileAgent) as agent:
        yield agent  # type: ignore[misc]  # running_agent built it as ConfigFileAgent


def _swap(path: Path, make: callable[[Path], None]) -> None:  # type: ignore[valid-type]
    tmp = path.with_name(path.name + ".new")
    make(tmp)
    os.replace(tmp, path)


def test_fifo_never_blocks_the_watcher(cli: ConfigFileAgent) -> None:
    errors = cli.errors()
    _swap(cli.path, os.mkfifo)
    cli.wait(lambda: cli.errors() == errors + 1, "the FIFO rejected")
    assert "FIFO, not a regular file" in cli.config()["lastError"]
    cli.proc.send_signal(signal.SIGHUP)  # a forced read of the FIFO: rejected again, not blocked
    cli.wait(lambda: cli.errors() == errors + 2, "the FIFO rejected on SIGHUP")
    started = time.monotonic()
    _swap(cli.path, lambda p: p.write_bytes(cli.document(2)))
    wait_for(lambda: cli.config()["generation"] == 2, "the good file after the FIFO", timeout=5)
    assert time.monotonic() - started < 1.0
    assert cli.errors() == errors + 2


def test_device_is_refused_unread(cli: ConfigFileAgent) -> None:
    errors = cli.errors()
    generation = cli.config()["generation"]
    cli.path.unlink()
    cli.path.symlink_to("/dev/zero")
    cli.wait(lambda: cli.errors() == errors + 1, "the device rejected")
    assert "character device, not a regular file" in cli.config()["lastError"]
    _swap(cli.path, lambda p: p.write_bytes(cli.document(generation + 1)))
    cli.wait(lambda: cli.config()["generation"] == generation + 1, "the good file after the device")


def test_oversized_file_is_refused_by_its_size(cli: ConfigFileAgent) -> None:
    errors = cli.errors()
    # 4 GiB of holes: read to the end it would take seconds and memory.
    _swap(cli.path, lambda p: os.truncate(p.write_bytes(b"") or p, 4 << 30))
    cli.wait(lambda: cli.errors() == errors + 1, "the huge file rejected")
    assert f"{4 << 30} bytes, more than the" in cli.config()["lastError"]


def test_file_readable_again_is_applied_within_a_second(cli: ConfigFileAgent) -> None:
    generation = cli.config()["generation"]
    errors = cli.errors()

    def unreadable(p: Path) -> None:
        p.write_bytes(cli.document(generation + 1))
        p.chmod(0)

    _swap(cli.path, unreadable)
    cli.wait(lambda: cli.errors() == errors + 1, "the unreadable file rejected")
    assert "Permission denied" in cli.config()["lastError"]
    assert cli.config()["generation"] == generation
    started = time.monotonic()
    cli.path.chmod(0o644)  # content and mtime unchanged
    wait_for(lambda: cli.config()["generation"] == generation + 1, "the file readable again", timeout=5)
    assert time.monotonic() - started < 1.0
    assert cli.errors() == errors + 1
