#!/usr/bin/env bash
# Long Nature-DQN Breakout run that survives interruptions, then its learning curve.
#
#   nohup scripts/reproduce_breakout.sh runs/breakout_nature > runs/breakout_nature.log 2>&1 &
#   scripts/reproduce_breakout.sh runs/breakout_nature --plot   # curve + CSV now, no training
#
# Re-launches the same command after any crash or kill -9: each launch resumes from the
# run's latest checkpoint (replay buffer included). SIGTERM/SIGINT to this script is passed
# on to the trainer, which saves a checkpoint and exits; the loop then stops. TensorFlow
# uses a GPU by itself when it sees one. Extra arguments after the run folder are passed to
# pipelines.train (e.g. --gin_bindings=...); keep them identical between launches.
set -u
cd "$(dirname "$0")/.."
ROOT=${1:?usage: scripts/reproduce_breakout.sh RUN_DIR [--plot | extra pipelines.train flags]}
shift
if [ -z "${PYTHON:-}" ]; then  # PYTHON=/path/to/python to choose
  PYTHON=python3
  [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
GIN_FILE=${GIN_FILE:-gin/dqn_breakout_nature.gin}
RESULTS=${RESULTS:-docs/results}

plot() {
  "$PYTHON" scripts/plot_breakout.py --root_dir="$ROOT" --out_dir="$RESULTS"
}

if [ "${1:-}" = "--plot" ]; then
  plot
  exit $?
fi

child=0
stop() {
  echo "reproduce_breakout: stopping (signal), the trainer saves a checkpoint" >&2
  [ "$child" -ne 0 ] && kill -TERM "$child" 2>/dev/null && wait "$child"
  exit 143
}
trap stop TERM INT

"$PYTHON" -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU'))" 2>/dev/null
while true; do
  echo "reproduce_breakout: launch at $(date -u +%FT%TZ)" >&2
  "$PYTHON" -m pipelines.train --gin_file="$GIN_FILE" --root_dir="$ROOT" "$@" &
  child=$!
  wait "$child"
  rc=$?
  child=0
  case $rc in
    0) break ;;                    # budget done
    2) exit 2 ;;                   # bad input (one-line error above): relaunching cannot help
    *) echo "reproduce_breakout: trainer exited with $rc, resuming in 10 s" >&2; sleep 10 ;;
  esac
done
plot
