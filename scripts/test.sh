#!/usr/bin/env bash
# Sets everything up, then runs the linter and the test suite (what CI runs).
#   scripts/test.sh            # lint + tests, learning tests included, slow ones skipped
#   scripts/test.sh --slow     # also the slow tests
#   scripts/test.sh -k adapter # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
.venv/bin/ruff check pipelines tests scripts
.venv/bin/ruff format --check pipelines tests scripts
args=()
for arg in "$@"; do
  if [ "$arg" = "--slow" ]; then args+=(-m ""); else args+=("$arg"); fi
done
# One worker per core; idle workers take queued tests from busy ones (worksteal).
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n auto --dist=worksteal --durations=15 "${args[@]}"
