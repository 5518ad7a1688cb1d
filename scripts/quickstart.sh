#!/usr/bin/env bash
# Sets everything up, then runs the default experiment (DQN on CartPole-v1).
#   scripts/quickstart.sh [--root_dir=runs/dqn_cartpole] [more pipelines-train flags]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
root_dir="runs/dqn_cartpole"
args=()
for arg in "$@"; do
  case "$arg" in --root_dir=*) root_dir="${arg#--root_dir=}" ;; *) args+=("$arg") ;; esac
done
exec .venv/bin/pipelines-train --gin_file=gin/dqn_cartpole.gin --root_dir="$root_dir" "${args[@]}"
