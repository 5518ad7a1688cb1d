"""Faults at Atari scale: how long distributed Breakout takes to recover from each failure.

    .venv/bin/python scripts/faults_distributed.py                      # ~10 min on 2 cores
    .venv/bin/python scripts/faults_distributed.py --work_dir=/tmp/faults --keep --timeout=900

Runs `pipelines-launch --role=all` on gin/dqn_breakout_dopamine.gin, unchanged but for
bindings that shorten the run's phases (a 50k-transition replay, 2k agent steps of random
start, a checkpoint every 2k agent steps, one short evaluation game), with 2 actors and no
evaluator role, waits until the learner trains, then injects four faults in turn, each once
training has resumed after the previous one:

1. actor 0 killed (SIGKILL): seconds until the supervisor's new actor 0 has sent its first
   report to the learner (it rejoined).
2. learner killed (SIGKILL): seconds until the new learner's first gradient steps; the
   counters it resumed at against those it had pushed before the kill (what is lost: up to
   one checkpoint interval); the server's item count before and after (the replay intact).
3. server stopped (SIGTERM): its checkpoint's time and item count; seconds until a new
   server listens, its load time and item count; seconds until the learner trains again.
4. server killed (SIGKILL): seconds until a new server listens, the items it holds against
   those before the kill (what was inserted since the last checkpoint is lost); seconds
   until the learner trains again.

Every time is taken from the signal to a line the role prints (`server: replay server
listening ... with N experience items`, `learner: weights pushed at train step T, E env
steps`, `learner: gradient steps at train step T after S s without`, `actor 0: first report
to the learner`); counters come from the server's variables table, which the learner
pushes every 32 gradient steps. The machine's load average is printed beside them: on a
shared 2-core machine every figure stretches with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # this process imports reverb (TensorFlow)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GIN = "gin/dqn_breakout_dopamine.gin"
BINDINGS = [
  "run_experiment.num_env_steps = 1_000_000",
  "run_experiment.checkpoint_interval = 2_000",
  "run_experiment.policy_export_interval = 1_000_000",
  "run_experiment.eval_interval = 1_000_000",
  "run_experiment.log_interval = 1_000",
  "OffPolicyTrainer.initial_collect_steps = 2_000",
  "frame_stack_replay.capacity = 50_000",
  "Evaluator.num_episodes = 1",
  "eval/make_environment.num_envs = 1",
  "eval/AtariProtocol.max_episode_frames = 800",
]
LISTENING = re.compile(r"listening on port \d+ with (\d+) experience items \(started in ([\d.]+) s\)")
CHECKPOINTED = re.compile(r"checkpoint \S+ written in ([\d.]+) s with (\d+) to (\d+) experience items")
PUSHED = re.compile(r"weights pushed at train step (\d+), (\d+) env steps")
TRAINING = re.compile(r"learner: gradient steps at train step (\d+) after ([\d.]+) s without")


class Log:
  """A role's log file, read from an offset: only what it printed after a given moment."""

  def __init__(self, path: Path):
    self.path = path
    self.offset = 0

  def mark(self) -> None:
    self.offset = self.path.stat().st_size if self.path.exists() else 0

  def wait(
    self, pattern: re.Pattern | str, timeout: float, since: float, required: bool = True
  ) -> tuple[float, re.Match | str] | None:
    """Seconds from `since` (time.monotonic()) until `pattern` appears after the mark, and its
    match. Lines are polled every 0.2 s; events waited for in their causal order are timed
    to that resolution."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
      if self.path.exists():
        with open(self.path) as f:
          f.seek(self.offset)
          text = f.read()
        found = pattern.search(text) if isinstance(pattern, re.Pattern) else (pattern in text and pattern)
        if found:
          return time.monotonic() - since, found
      time.sleep(0.2)
    if not required:
      return None
    raise SystemExit(
      f"faults_distributed: no {getattr(pattern, 'pattern', pattern)!r} in {self.path} after {timeout:.0f} s"
    )


class Server:
  """What the benchmark asks the Reverb server: item count and the learner's counters."""

  def __init__(self, port: int):
    from pipelines import cli

    cli.quiet_libraries()  # before reverb and tf_agents print their start-up lines
    import reverb  # imports TensorFlow: after the launch has started

    from pipelines.replay import reverb_replay as rr

    self._rr, self._client = rr, reverb.Client(f"localhost:{port}")  # reconnects after restarts

  def items(self) -> int:
    return int(self._client.server_info(timeout=10)[self._rr.EXPERIENCE].current_size)

  def trains_again(self, timeout: float, since: float) -> float:
    """Seconds from `since` until the train step in the variables table passes the one the
    server restored: the learner (the same process, reconnected by gRPC, or a restarted one)
    has trained and pushed weights to this server."""
    start, restored = time.monotonic(), None
    while time.monotonic() - start < timeout:
      try:
        step = self.counters()[0]
      except Exception:  # noqa: BLE001  (grpc: the server is still loading)
        step = None
      if step is not None and restored is None:
        restored = step
      elif step is not None and step > restored:
        return time.monotonic() - since
      time.sleep(0.5)
    raise SystemExit(f"faults_distributed: the learner did not train on the new server in {timeout:.0f} s")

  def counters(self) -> tuple[int, int]:
    """(train step, env steps) the learner last pushed."""
    from tf_agents.experimental.distributed import reverb_variable_container as rvc

    (sample,) = self._client.sample(
      self._rr.VARIABLES, num_samples=1, emit_timesteps=False, unpack_as_table_signature=True
    )
    value = lambda key: int(np.asarray(sample.data[key]).reshape(-1)[0])  # noqa: E731
    return value(rvc.TRAIN_STEP_KEY), value("env_steps")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--work_dir", default=None, help="run folder's parent (default: a temporary one)")
  parser.add_argument("--keep", action="store_true", help="keep the run folder and its logs")
  parser.add_argument("--timeout", type=float, default=600.0, help="seconds each recovery may take")
  args = parser.parse_args()
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through `finally`: the launch is stopped too
  from pipelines.replay.addresses import free_port

  work = Path(args.work_dir or tempfile.mkdtemp(prefix="faults_distributed_"))
  work.mkdir(parents=True, exist_ok=True)
  root, port = work / "run", free_port()
  command = [sys.executable, "-m", "pipelines.launch", f"--gin_file={GIN}"]
  command += [f"--gin_bindings={b}" for b in BINDINGS]
  command += [f"--root_dir={root}", "--num_actors=2", "--noeval", f"--port={port}"]
  logs = root / "logs"
  launch_log = work / "launch.log"
  print(f"{GIN} at reduced scale, 2 actors, server port {port}; logs in {logs}", flush=True)
  with open(launch_log, "w") as out:
    launch = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
  server_log, learner_log, actor_log = (Log(logs / f"{n}.log") for n in ("server", "learner", "actor_0"))
  roles = lambda: json.loads((logs / "roles.json").read_text())  # noqa: E731
  load = lambda: f"load {os.getloadavg()[0]:.1f}"  # noqa: E731
  try:
    seconds, _ = learner_log.wait(TRAINING, args.timeout, since=time.monotonic())
    print(f"0. start: the learner's first gradient steps after {seconds:.0f} s more ({load()})", flush=True)
    server = Server(port)

    def inject(role: str, sig: int, *logs: Log) -> float:
      """Marks the logs, sends the signal; returns the moment it was sent."""
      for log in logs:
        log.mark()
      os.kill(roles()[role], sig)
      return time.monotonic()

    sent = inject("actor 0", signal.SIGKILL, actor_log)
    seconds, _ = actor_log.wait("actor 0: first report to the learner", args.timeout, sent)
    print(
      f"1. actor 0 killed: a new actor 0 reported to the learner after {seconds:.1f} s ({load()})", flush=True
    )

    time.sleep(5)
    items, (train_at_kill, env_at_kill) = server.items(), server.counters()
    sent = inject("learner", signal.SIGKILL, learner_log)
    _, pushed = learner_log.wait(PUSHED, args.timeout, sent)
    seconds, _ = learner_log.wait(TRAINING, args.timeout, sent)
    resumed_train, resumed_env = int(pushed.group(1)), int(pushed.group(2))
    # The learner counts env steps from the actors' reports, which wait in the server's queue:
    # a new learner counts those the dead one had not; what is lost is gradient steps.
    print(
      f"2. learner killed at train step {train_at_kill:,} ({env_at_kill:,} env steps counted): gradient "
      f"steps again after {seconds:.1f} s, resumed from its checkpoint at train step {resumed_train:,}, "
      f"{resumed_env:,} env steps ({train_at_kill - resumed_train:,} gradient steps to redo; a checkpoint "
      f"every 2,000 env steps = 500 gradient steps); server items {items:,} before, "
      f"{server.items():,} after ({load()})",
      flush=True,
    )

    for number, sig in ((3, signal.SIGTERM), (4, signal.SIGKILL)):
      time.sleep(10)
      items = server.items()
      sent = inject("server", sig, server_log, learner_log)
      saved = server_log.wait(CHECKPOINTED, args.timeout, sent)[1] if sig == signal.SIGTERM else None
      seconds, listening = server_log.wait(LISTENING, args.timeout, sent)
      trained = server.trains_again(args.timeout, sent)
      loaded, load_seconds = int(listening.group(1)), float(listening.group(2))
      restarted = "restarted" if learner_log.wait("$ ", 0.5, sent, required=False) else "the same process"
      if saved:
        low, high = int(saved.group(2)), int(saved.group(3))
        how = f"stopped (SIGTERM) holding {items:,} items, checkpoint in {float(saved.group(1)):.1f} s"
      else:
        how = f"killed (SIGKILL) holding {items:,} items"
      print(
        f"{number}. server {how}: a new server listened after {seconds:.1f} s with {loaded:,} items "
        f"({loaded - items:+,}), loaded in {load_seconds:.2f} s; the learner ({restarted}) trained "
        f"on it after {trained:.1f} s ({load()})",
        flush=True,
      )
      if saved and not low <= loaded <= high:
        raise SystemExit(f"faults_distributed: the restarted server holds {loaded} items, not {low}-{high}")
  finally:
    os.killpg(launch.pid, signal.SIGINT)
    try:
      launch.wait(timeout=300)
    except subprocess.TimeoutExpired:
      os.killpg(launch.pid, signal.SIGKILL)
    if args.keep:
      print(f"kept {work}", flush=True)
    else:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
