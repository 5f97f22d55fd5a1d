#!/usr/bin/env bash
# Regenerates constraints.txt: every Python package kpod-metrics installs
# (all extras and the test tools), resolved in a clean venv, pinned exactly.
# Both images and scripts/setup.sh install with `-c constraints.txt`.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="$(mktemp -d)"
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "${here}[test]"
{
  echo "# Exact versions of every Python package kpod-metrics installs, for setup"
  echo "# (the test venv) and both images: pip install -c constraints.txt ..."
  echo "# Regenerate with scripts/lock.sh after changing pyproject.toml."
  "$venv/bin/pip" freeze --exclude kpod-metrics
} >"$here/constraints.txt"
