#!/usr/bin/env bash
# Runs the static checks (scripts/lint.sh), then the whole suite with the
# project's venv; fails if either failed. pytest's exit code 5 ("no tests
# collected") is a failure here: a suite that ran nothing proves nothing.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
scripts/lint.sh
lint=$?
.venv/bin/python -m pytest -p no:cacheprovider "$@"
code=$?
if [[ $code -eq 5 ]]; then
  echo "run-tests: pytest collected no tests" >&2
  code=1
fi
if [[ $lint -ne 0 && $code -eq 0 ]]; then
  echo "run-tests: the tests passed but the static checks did not (scripts/lint.sh)" >&2
  code=1
fi
exit $code
