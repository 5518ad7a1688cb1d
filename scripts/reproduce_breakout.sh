#!/usr/bin/env bash
# Long DQN Breakout run (Dopamine's current protocol) that survives interruptions, then its
# comparison with the reference curve.
#
#   scripts/reproduce_breakout.sh runs/breakout_dopamine --background   # start or resume, detached
#   scripts/reproduce_breakout.sh runs/breakout_dopamine --report       # comparison now, no training
#   scripts/reproduce_breakout.sh runs/breakout_dopamine                # start or resume, in this shell
#
# --background runs this script itself under nohup: log in RUN_DIR.log, process id in RUN_DIR.pid
# (stop with `kill $(cat RUN_DIR.pid)`), refused while that process lives.
# --report (or --plot) runs scripts/plot_breakout.py: per 1M-frame iteration the run's
# training-game return beside the reference's mean and 5-run band, as RESULTS/<run>_vs_dopamine.png
# and RESULTS/<run>_vs_reference.md, plus <run>_train.csv and <run>_eval.csv; the reference follows
# the run's gin file, from reference/; arguments after it go to plot_breakout.py (e.g. --reference=PATH).
# The trainer is re-launched after any crash or kill -9: each launch resumes from the run's latest
# checkpoint (replay buffer included). SIGTERM/SIGINT to this script is passed on to the trainer,
# which saves a checkpoint and exits; the loop then stops. TensorFlow uses a GPU by itself when it
# sees one. Other arguments after the run folder are passed to pipelines.train (e.g.
# --gin_bindings=...); keep them and GIN_FILE identical between launches (a changed config is refused).
#
# Environment: GIN_FILE (default gin/dqn_breakout_dopamine.gin; gin/dqn_breakout_nature.gin and
# gin/dqn_breakout_dopamine_legacy.gin are the other protocols), RESULTS (default docs/results),
# PYTHON (default .venv/bin/python, else python3).
set -u
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"  # re-run by --background after the cd
cd "$(dirname "$0")/.."
ROOT=${1:?usage: scripts/reproduce_breakout.sh RUN_DIR [--background | --report | --plot] [flags]}
ROOT=${ROOT%/}
shift
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
GIN_FILE=${GIN_FILE:-gin/dqn_breakout_dopamine.gin}
RESULTS=${RESULTS:-docs/results}

plot() {
  "$PYTHON" scripts/plot_breakout.py --root_dir="$ROOT" --out_dir="$RESULTS" "$@"
}

case "${1:-}" in
  --plot | --report)
    shift
    plot "$@"
    exit $?
    ;;
  --background)
    shift
    # Beside the run folder, not in it: the trainer refuses a new folder holding other files.
    log="$ROOT.log"
    pidfile="$ROOT.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "reproduce_breakout: error: $ROOT is already being trained by process $(cat "$pidfile") (log: $log)" >&2
      exit 2
    fi
    mkdir -p "$(dirname "$ROOT")"
    GIN_FILE="$GIN_FILE" RESULTS="$RESULTS" PYTHON="$PYTHON" nohup "$SELF" "$ROOT" "$@" >>"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "reproduce_breakout: training $ROOT with $GIN_FILE in the background (process $!)"
    echo "  log: $log   stop: kill \$(cat $pidfile)   comparison now: $0 $ROOT --report"
    exit 0
    ;;
esac

child=0
stop() {
  echo "reproduce_breakout: stopping (signal), the trainer saves a checkpoint" >&2
  [ "$child" -ne 0 ] && kill -TERM "$child" 2>/dev/null && wait "$child"
  exit 143
}
trap stop TERM INT

"$PYTHON" -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU'))" 2>/dev/null
while true; do
  echo "reproduce_breakout: launch at $(date -u +%FT%TZ) ($GIN_FILE)" >&2
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
