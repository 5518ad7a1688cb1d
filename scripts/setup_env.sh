#!/usr/bin/env bash
# Creates .venv with Python 3.11 and installs the package with its pinned dependencies.
# Re-running it reuses what is installed (it reinstalls only when setup.cfg or EXTRAS changed).
#   scripts/setup_env.sh            # then use .venv/bin/pipelines-train ...
#   EXTRAS=gpu scripts/setup_env.sh # NVIDIA GPU: adds TensorFlow's CUDA wheels (setup.cfg, ~1.9 GB)
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  if ! python=$(find_python); then
    echo "error: Python 3.11 is required (dm-reverb has no wheel for 3.12; TF 2.15 none for 3.12+)." >&2
    echo "Install python3.11 (e.g. 'apt-get install python3.11 python3.11-venv' or pyenv), or set PYTHON=/path/to/python3.11." >&2
    exit 1
  fi
  echo "Creating .venv with $python" >&2
  "$python" -m venv .venv
fi

extras=dev${EXTRAS:+,$EXTRAS}  # dev always: scripts/test.sh needs pytest and ruff
stamp=.venv/.installed-$({ cat setup.cfg pyproject.toml; echo "$extras"; } | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "Installing tfa-pipelines and its pinned dependencies into .venv (first time: a few minutes)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=23" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]" >&2
  rm -f .venv/.installed-*
  touch "$stamp"
fi
