#!/usr/bin/env bash
# Static checks, configured in pyproject.toml: ruff (style and likely bugs),
# mypy (types of the agent and operator packages) and import-linter (the
# layers of both packages, and that the operator reaches the agent only
# through its shared config/contract modules). Runs all three, then fails if
# any failed, so one run shows every finding.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
failed=()
echo "lint: ruff"
.venv/bin/ruff check --no-cache . || failed+=(ruff)
echo "lint: mypy"
.venv/bin/mypy || failed+=(mypy)
echo "lint: import-linter"
.venv/bin/lint-imports --no-cache || failed+=(import-linter)
if (( ${#failed[@]} )); then
  echo "lint: failed: ${failed[*]}" >&2
  exit 1
fi
echo "lint: ruff, mypy and import-linter passed"
