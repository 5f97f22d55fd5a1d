#!/usr/bin/env bash
# Runs the whole suite with the project's venv. pytest's exit code 5 ("no
# tests collected") is a failure here: a suite that ran nothing proves nothing.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
.venv/bin/python -m pytest -p no:cacheprovider "$@"
code=$?
if [[ $code -eq 5 ]]; then
  echo "run-tests: pytest collected no tests" >&2
  exit 1
fi
exit $code
