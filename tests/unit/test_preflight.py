"""Setup failures a new user meets: each gives its own message and a non-zero
exit, never a traceback. The checks run against real (empty or partial)
trees; the command runs as a real process, as a real non-root user."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kpod_agent import preflight

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "standalone.yaml"
RELEASE = platform.release()
# The checks after the root check run only as root: marked `kernel`, so they
# skip without root and fail under CI=true (tests/conftest.py).
needs_root = pytest.mark.kernel


def headers_tree(base: Path, build: bool = True, kconfig_in: str | None = "source") -> Path:
    """A /lib/modules look-alike: build/include, and kconfig.h where Debian puts it."""
    release = base / RELEASE
    if build:
        (release / "build" / "include" / "generated").mkdir(parents=True)
    if kconfig_in:
        target = release / kconfig_in / "include" / "linux"
        target.mkdir(parents=True, exist_ok=True)
        (target / "kconfig.h").write_text("/* */\n")
    return base


# ---- the checks on their own ------------------------------------------------------


def test_headers_missing_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_headers(str(tmp_path))
    assert f"no kernel headers at {tmp_path}/{RELEASE}/build" in str(err.value)
    assert f"linux-headers-{RELEASE}" in str(err.value)


def test_headers_split_across_build_and_source_are_enough(tmp_path: Path) -> None:
    preflight.check_headers(str(headers_tree(tmp_path, kconfig_in="source")))
    other = tmp_path / "b"
    preflight.check_headers(str(headers_tree(other, kconfig_in="build")))


def test_headers_without_the_common_part_are_incomplete(tmp_path: Path) -> None:
    with pytest.raises(preflight.PreflightError, match="incomplete.*linux-headers-\\*-common"):
        preflight.check_headers(str(headers_tree(tmp_path, kconfig_in=None)))


def test_headers_dangling_build_link(tmp_path: Path) -> None:
    (tmp_path / RELEASE).mkdir()
    (tmp_path / RELEASE / "build").symlink_to(tmp_path / "gone")
    with pytest.raises(preflight.PreflightError, match="no kernel headers"):
        preflight.check_headers(str(tmp_path))


def test_tracefs_found_in_any_root(tmp_path: Path) -> None:
    (tmp_path / "debug" / "events").mkdir(parents=True)
    preflight.check_tracefs((str(tmp_path / "tracing"), str(tmp_path / "debug")))
    with pytest.raises(preflight.PreflightError, match="tracefs is not mounted.*mount -t tracefs"):
        preflight.check_tracefs((str(tmp_path / "tracing"),))


def test_cgroup2_from_the_mount_table(tmp_path: Path) -> None:
    with_v2 = tmp_path / "mounts-v2"
    with_v2.write_text("proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n")
    preflight.check_cgroup2(str(with_v2))
    v1_only = tmp_path / "mounts-v1"
    v1_only.write_text("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\n")
    with pytest.raises(preflight.PreflightError, match="no cgroup2 filesystem is mounted"):
        preflight.check_cgroup2(str(v1_only))
    with pytest.raises(preflight.PreflightError, match="cannot read"):
        preflight.check_cgroup2(str(tmp_path / "missing"))


def test_env_overrides_are_read_at_check_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPOD_MODULES_ROOT", str(tmp_path))
    monkeypatch.setenv("KPOD_TRACEFS_ROOTS", f"{tmp_path}/a:{tmp_path}/b")
    monkeypatch.setenv("KPOD_PROC_MOUNTS", str(tmp_path / "nothing"))
    for check in (preflight.check_headers, preflight.check_tracefs, preflight.check_cgroup2):
        with pytest.raises(preflight.PreflightError):
            check()
    (tmp_path / "b" / "events").mkdir(parents=True)
    preflight.check_tracefs()


@needs_root
def test_every_problem_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPOD_MODULES_ROOT", str(tmp_path))
    monkeypatch.setenv("KPOD_TRACEFS_ROOTS", str(tmp_path))
    found = preflight.problems()
    assert len(found) == 2 and "kernel headers" in found[0] and "tracefs" in found[1]
    with pytest.raises(preflight.PreflightError) as err:
        preflight.run_all()
    assert str(err.value).startswith("2 things to fix first:\n  - no kernel headers")


# ---- the command, as a user runs it -----------------------------------------------


def agent_command(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("kpod-agent")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "kpod_agent.main"]
    return [*base, "--config", str(CONFIG), "--listen", "127.0.0.1:0", *args]


def run_agent(env: dict[str, str] | None = None, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    # If every check passed the agent would start and serve: the timeout turns that into a failure.
    return subprocess.run([*(prefix or []), *agent_command()], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


def assert_user_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("kpod-agent: "), result.stderr
    assert message in result.stderr, result.stderr


def test_not_root() -> None:
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to drop root")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = run_agent(prefix=prefix)
    assert_user_error(result, "kpod-agent must run as root")
    assert "sudo make run" in result.stderr


@needs_root
def test_no_kernel_headers(tmp_path: Path) -> None:
    assert_user_error(run_agent({"KPOD_MODULES_ROOT": str(tmp_path)}),
                      f"no kernel headers at {tmp_path}/{RELEASE}/build: install linux-headers-{RELEASE}")


@needs_root
def test_no_tracefs(tmp_path: Path) -> None:
    assert_user_error(run_agent({"KPOD_TRACEFS_ROOTS": str(tmp_path)}),
                      "tracefs is not mounted")


@needs_root
def test_no_cgroup2(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("".join(line + "\n" for line in Path("/proc/mounts").read_text().splitlines()
                              if line.split()[2:3] != ["cgroup2"]))
    assert_user_error(run_agent({"KPOD_PROC_MOUNTS": str(mounts)}), "no cgroup2 filesystem is mounted")


@needs_root
def test_no_bcc(tmp_path: Path) -> None:
    # A bcc that fails to import, as on a venv without system site packages.
    fake = tmp_path / "bcc"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named bcc')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    assert_user_error(run_agent(env), "bcc is not importable: install it with `apt-get install python3-bpfcc")


@needs_root
def test_preflight_module_says_ok_on_this_machine() -> None:
    """The tests above fail for their planted reason only: here, nothing is missing."""
    result = subprocess.run([sys.executable, "-m", "kpod_agent.preflight"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "preflight ok" in result.stdout
