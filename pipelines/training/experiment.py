"""The collect-train-evaluate loop, wired from small gin-configurable factories.

    pipelines-train --gin_file=gin/dqn_cartpole.gin --root_dir=runs/dqn_cartpole

Data flows environments -> collection -> replay -> dataset -> learning -> evaluation.
`run_experiment` builds each part from a factory (swap one with an `@reference`
binding), refuses bad input before it writes anything, restores the latest checkpoint
of `root_dir`, then loops: run the trainer up to the next due trigger, then evaluate,
checkpoint, export the greedy policy and write summaries when their interval is due.
Every interval and budget is counted in environment steps, summed over all copies.
A write that fails (disk full, permission lost, read-only folder) stops the run with one
line naming what and where, and the checkpoint it can resume from (exit code 74).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gin
import numpy as np
import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.environments import py_environment, tf_environment, tf_py_environment
from tf_agents.train import interval_trigger

from pipelines import signals
from pipelines.agents.agents import ActionSpaceError
from pipelines.envs import environments
from pipelines.errors import PipelineError, WriteError
from pipelines.storage import checkpoints
from pipelines.storage import run_folder as rf
from pipelines.training import collection, evaluation, learning, progress, recorder, video, warm_start

# One graph call runs about this many env steps, so progress and signals stay responsive.
_ENV_STEPS_PER_CALL = 1_000
# Why a write fails when the code is fine, and what brings the run back.
_WRITE_FAULTS = {
  errno.ENOSPC: "free space",
  errno.EDQUOT: "free space",
  errno.EACCES: "make {root} writable again",
  errno.EPERM: "make {root} writable again",
  errno.EROFS: "make {root} writable again",
  errno.EIO: "check the disk",
}


class IntervalTrigger(interval_trigger.IntervalTrigger):
  """TF-Agents' trigger (calls `fn` once `step >= last + interval`; robust to steps that jump
  past a multiple), plus `steps_to_next`, so that the loop can end a graph call exactly where
  the next event is due. `interval` None or 0: never. `start` is aligned down to a multiple
  of `interval`, so a resumed run keeps its evaluation steps.
  """

  def __init__(self, interval: int | None, fn: Callable[[], Any], start: int = 0):
    interval = interval or 0
    super().__init__(interval, fn, start=start - start % interval if interval > 0 else 0)

  def steps_to_next(self, step: int) -> float:
    # TF-Agents 0.19 (pinned) keeps its state in these two attributes and exposes no getter.
    if self._interval <= 0:
      return math.inf
    return self._last_trigger_value + self._interval - step


@dataclasses.dataclass(frozen=True)
class Schedule:
  """When the loop does what: `run_experiment`'s settings of the same names, in env steps
  summed over copies (`progress_interval`: seconds). An interval None or 0: never."""

  num_env_steps: int
  eval_interval: int | None
  checkpoint_interval: int | None
  policy_export_interval: int | None
  log_interval: int | None
  target_return: float | None
  progress_interval: float


@dataclasses.dataclass
class Components:
  """Everything one experiment is made of, built from the gin config."""

  collect_env: py_environment.PyEnvironment
  eval_env: py_environment.PyEnvironment
  tf_env: tf_environment.TFEnvironment
  eval_tf_env: tf_environment.TFEnvironment
  agent: tf_agent.TFAgent
  trainer: learning.Trainer
  evaluator: Callable  # (tf_env, policy) -> EvalResult, e.g. evaluation.Evaluator
  metrics: collection.TrainingMetrics
  train_step: tf.Variable
  seed: int

  def close(self) -> None:
    for env in (self.collect_env, self.eval_env):
      env.close()


@gin.configurable
def build_components(
  agent_fn: Callable = gin.REQUIRED,
  trainer_fn: Callable = learning.OffPolicyTrainer,
  evaluator_fn: Callable = evaluation.Evaluator,
  seed: int = 0,
) -> Components:
  """Builds environments, agent, trainer and evaluator; writes nothing anywhere.

  seed: seeds TensorFlow, NumPy (and through it the frame-store sampler), the evaluator's
    epsilon draws and environment copy i with `environments.copy_seeds(seed)[i]` (eval:
    seed + 10_000).
  """
  tf.random.set_seed(seed)
  np.random.seed(seed)
  with gin.config_scope("collect"):
    collect_env = environments.make_environment(seed=seed)
  with gin.config_scope("eval"):
    eval_env = environments.make_environment(seed=seed + 10_000)
  tf_env = tf_py_environment.TFPyEnvironment(collect_env)
  train_step = tf.Variable(0, dtype=tf.int64, name="train_step")
  metrics = collection.TrainingMetrics.create(tf_env.batch_size or 1)
  try:
    agent = agent_fn(
      tf_env.time_step_spec(), tf_env.action_spec(), train_step, metrics.env_steps.environment_steps
    )
  except ActionSpaceError as e:
    reason = str(e).strip().splitlines()[0]  # gin appends where the call came from
    raise PipelineError(f"{reason}, in environment {getattr(collect_env, 'name', '?')}") from None
  return Components(
    collect_env=collect_env,
    eval_env=eval_env,
    tf_env=tf_env,
    eval_tf_env=tf_py_environment.TFPyEnvironment(eval_env),
    agent=agent,
    trainer=trainer_fn(agent, tf_env, metrics.observers),
    evaluator=evaluator_fn(seed=seed),
    metrics=metrics,
    train_step=train_step,
    seed=seed,
  )


@gin.configurable(denylist=["root_dir", "build_fn", "init_from", "init_replay"])
def run_experiment(
  root_dir: str,
  num_env_steps: int = 50_000,
  eval_interval: int = 1_000,
  checkpoint_interval: int = 10_000,
  policy_export_interval: int = 10_000,
  target_return: float | None = None,
  frames_per_env_step: int | None = None,
  log_interval: int | None = None,
  progress_interval: float = 60.0,
  build_fn: Callable[[], Components] = build_components,
  init_from: str | None = None,
  init_replay: bool = False,
) -> dict:
  """Trains and evaluates one agent; returns the final evaluation summary.

  num_env_steps: training budget in env steps. *_interval: env steps between events.
  target_return: stop early once an evaluation mean reaches it (None: use the budget).
  frames_per_env_step: emulator frames per env step (Atari: 4); when set, metrics records
    get a `frames` field and TensorBoard plots returns against frames too.
  log_interval: env steps between training records (train_metrics.jsonl: whole-game
    training returns, speed); None: none.
  progress_interval: seconds between `progress:` lines (env steps, frames, steps/s, train
    steps, last evaluation, ETA) when stderr is not a terminal (a log file, CI); a terminal
    gets tqdm's bar instead. 0: no lines.
  build_fn: builds the components (a distributed learner passes its own trainer).
  init_from, init_replay: `pipelines-train --init_from=RUN[:ENV_STEPS] [--init_replay]`: a run
    without a checkpoint of its own starts from that run's agent (and replay); see
    `pipelines/training/warm_start.py`. Ignored once the run has checkpointed.
  """
  folder = rf.RunFolder(root_dir)
  folder.check_usable()
  parts = build_fn()
  operative_config = gin.operative_config_str()
  changes = folder.check_config(operative_config, gin.config_str())
  started_from = None
  if init_from and not warm_start.kept_checkpoints(folder.root):  # before anything is written
    items = parts.trainer.checkpoint_items()
    started_from = warm_start.warm_start(init_from, parts.agent, parts.train_step, items, init_replay)
  folder.lock()
  loop = None
  try:
    with _writing("run start", folder.root, folder.root, lambda: "the run's checkpoints were not touched"):
      folder.write_metadata(operative_config, parts.seed)
      if started_from:
        folder.record_info(init_from=started_from)
        what = "agent and replay" if started_from["replay"] else "agent"
        source, steps = started_from["run"], started_from["env_steps"]
        print(f"Starting from the {what} of {source} at {steps} env steps", file=sys.stderr)
      if changes:
        folder.record_config_change(operative_config, changes)
        print(
          f"Continuing {folder.root} with changed settings: {rf.describe_changes(changes)}", file=sys.stderr
        )
      loop = _Loop(folder, parts, frames_per_env_step)
      loop.recorder.config(operative_config)
    schedule = Schedule(
      num_env_steps=num_env_steps,
      eval_interval=eval_interval,
      checkpoint_interval=checkpoint_interval,
      policy_export_interval=policy_export_interval,
      log_interval=log_interval,
      target_return=target_return,
      progress_interval=progress_interval,
    )
    # Writes without a more precise `_writing` around them (TensorBoard's event files) fail
    # in one line too; here only errors that name a write fault are taken for one.
    with _writing("training", None, folder.root, loop.checkpoint_note, any_os=False):
      return loop.run(schedule)
  finally:
    if loop is not None:  # summaries of a run stopped by a signal or an error too
      with contextlib.suppress(Exception):
        loop.recorder.flush()
      loop.videos.close()
    folder.unlock()
    parts.close()


def _write_fault(error: BaseException, any_os: bool) -> tuple[int | None, str] | None:
  """(errno, reason) when `error` says a write failed; None when it is something else.

  TensorFlow (checkpoints, SavedModels, summaries) and Reverb put the errno's text in
  their own exception types ("...; No space left on device").
  """
  if isinstance(error, OSError) and (any_os or error.errno in _WRITE_FAULTS):
    return error.errno, error.strerror or str(error)
  for code in _WRITE_FAULTS:
    if os.strerror(code) in str(error):
      return code, os.strerror(code)
  return None


@contextlib.contextmanager
def _writing(what: str, path: Path | None, root: Path, note: Callable[[], str], any_os: bool = True):
  """Turns a failed write (disk full, permission lost, read-only folder) into one error line:
  what failed, where, why, which checkpoint is intact and what brings the run back.

  path: what the block writes (None: whatever file the error names, else the run folder).
  any_os: every OSError is a failed write (the block only writes); else only the errno
    values of `_WRITE_FAULTS`.
  """
  try:
    yield
  except (OSError, RuntimeError, tf.errors.OpError) as e:
    fault = _write_fault(e, any_os)
    if fault is None:
      raise
    code, reason = fault
    named = getattr(e, "filename", None) or next(iter(re.findall(r"(?:^|\s)(/[^\s;'\",]+)", str(e))), None)
    # The file the error names, unless it lies inside `path` (TensorFlow's temporary names
    # there would only add noise): a Reverb checkpoint, say, is written in /tmp first.
    if path is None or (named and not str(named).startswith(str(path))):
      path = named or root
    advice = _WRITE_FAULTS.get(code, "fix that").format(root=root)
    raise WriteError(
      f"{what} failed while writing {path}: {reason}; {note()}; {advice} and run the same command to resume"
    ) from e


class _Loop:
  """The phases of one run: restore, train chunks, triggered events, finish."""

  def __init__(self, folder: rf.RunFolder, parts: Components, frames_per_env_step: int | None = None):
    self.folder = folder
    self.collect_env = parts.collect_env
    # Finished games' scores: from the environment, or from the actors (distributed learner).
    source = parts.trainer if isinstance(parts.trainer, learning.GameScores) else parts.collect_env
    self.pop_game_returns = source.pop_game_returns
    self.frames_per_env_step = frames_per_env_step
    self.agent = agent = parts.agent
    self.trainer = trainer = parts.trainer
    self.evaluator = parts.evaluator
    self.metrics = metrics = parts.metrics
    self.train_step = train_step = parts.train_step
    self.eval_env = parts.eval_tf_env
    self.eval_py_env = parts.eval_env
    self.wall_seconds = tf.Variable(0.0, dtype=tf.float64, name="wall_seconds")
    self.eval_seconds = tf.Variable(0.0, dtype=tf.float64, name="eval_seconds")
    self.checkpointer = checkpoints.Checkpointer(
      folder.path(rf.CHECKPOINTS),
      agent=agent,
      train_step=train_step,
      wall_seconds=self.wall_seconds,
      eval_seconds=self.eval_seconds,
      **{f"metric_{name}": m for name, m in vars(metrics).items()},
      **trainer.checkpoint_items(),
    )
    self.policy_exporter = checkpoints.PolicyExporter(
      agent.policy,
      train_step,
      folder.path(rf.POLICY),
      folder.path(rf.POLICIES),
      env_steps=metrics.env_steps.environment_steps,
    )
    self.videos = video.EvalVideos(
      folder.path(rf.VIDEOS), epsilon=getattr(parts.evaluator, "epsilon", 0.0), seed=parts.seed + 20_000
    )
    self.recorder = recorder.Recorder(folder, frames_per_env_step, writing=self._writing)
    self.last_eval: dict | None = None
    self._restored = False
    self._saved_at: tuple[int, int] | None = None  # (env steps, train steps) of the last checkpoint

  @property
  def env_steps(self) -> int:
    return int(self.metrics.env_steps.result())

  def _elapsed(self) -> float:
    return float(self.wall_seconds) + time.perf_counter() - self._clock_start

  def checkpoint_note(self) -> str:
    """What a failed write leaves to resume from, for its error line."""
    steps = self.checkpointer.last_complete
    if not self._restored:
      return "the run's checkpoints were not touched"
    if steps is None:
      return "no checkpoint was saved yet, so the run starts over"
    return f"the last complete checkpoint ({steps} env steps) is intact"

  def _writing(self, what: str, path):
    return _writing(what, path, self.folder.root, self.checkpoint_note)

  def run(self, schedule: Schedule) -> dict:
    restored = self.checkpointer.restore()
    self._restored = True
    self._saved_at = (self.env_steps, int(self.train_step)) if restored else None
    records = self.recorder.rewind(self.env_steps)
    if restored:
      print(f"Resuming {self.folder.root} at {self.env_steps} env steps", file=sys.stderr)
    self.last_eval = records[-1] if records else None
    # Policies saved after the restored checkpoint belong to a future that was thrown away:
    # removed, so each numbered policy and `best` is one this run's history leads to.
    with self._writing("policy cleanup", self.folder.path(rf.POLICIES)):
      discarded = self.policy_exporter.discard_after(self.env_steps, records)
    if discarded:
      print(f"Removed the policies saved after {self.env_steps} env steps: {discarded}", file=sys.stderr)
      self._export(numbered=False)  # policy/ (`latest`) holds the restored weights again
    self._clock_start = time.perf_counter()
    with tf.summary.record_if(False):
      self.trainer.initialize()

    # Periodic work in the order it happens at one step: the checkpoint after the evaluation
    # it records, the export after the checkpoint.
    step = self.env_steps
    triggers = [
      IntervalTrigger(schedule.eval_interval, self._evaluate, step),
      IntervalTrigger(schedule.log_interval, self._log, step),
      IntervalTrigger(schedule.checkpoint_interval, self._save, step),
      IntervalTrigger(schedule.policy_export_interval, self._export, step),
    ]
    self._log_start = (self.env_steps, self._elapsed())
    per_iteration = self.trainer.env_steps_per_iteration

    def reached() -> bool:
      target = schedule.target_return
      return target is not None and self.last_eval is not None and self.last_eval["average_return"] >= target

    total = schedule.num_env_steps
    with signals.StopSignals() as stop, self._progress(total, schedule.progress_interval) as report:
      while self.env_steps < total and not reached() and stop.received is None:
        budget = min(
          total - self.env_steps,
          max(_ENV_STEPS_PER_CALL, per_iteration),
          *(max(t.steps_to_next(self.env_steps), 1) for t in triggers),
        )
        with tf.summary.record_if(False):
          loss = self.trainer.run(max(1, math.ceil(budget / per_iteration)))
        if not math.isfinite(loss):
          raise PipelineError(
            f"the loss became {loss} at train step {int(self.train_step)}; stopped without "
            f"saving, the last good checkpoint in {self.folder.path(rf.CHECKPOINTS)} is kept"
          )
        self.recorder.training(self.env_steps, int(self.train_step), loss, self._collection_metrics())
        self.recorder.games(self.env_steps, self.pop_game_returns())
        for trigger in triggers:
          trigger(self.env_steps)
        report.update(self.env_steps, int(self.train_step), self.last_eval)  # after the events

    if stop.received is not None:
      self._save()
      print(
        f"Stopped by signal {stop.received} at {self.env_steps} env steps; checkpoint saved. "
        "Run the same command to resume.",
        file=sys.stderr,
      )
      raise SystemExit(stop.exit_code)
    return self._finish()

  def _progress(self, total: int, interval: float) -> progress.Progress:
    # A bar on a terminal; in a file or CI log a line every `interval` seconds.
    return progress.Progress(total, self.env_steps, self.frames_per_env_step, interval)

  def _collection_metrics(self) -> list:
    # Env steps are the axis itself, not a curve of their own.
    return [m for m in vars(self.metrics).values() if m is not self.metrics.env_steps]

  def _fields(self) -> dict:
    """What every record starts with: env steps (frames), train steps, wall seconds."""
    fields = self.recorder.fields(self.env_steps, int(self.train_step))
    return {**fields, "wall_seconds": round(self._elapsed(), 3)}

  def _log(self) -> None:
    """One training record: whole-game returns finished since the last one, and speed."""
    steps, seconds = self._log_start
    self._log_start = (self.env_steps, self._elapsed())
    self.recorder.train_record(
      self._fields(),
      env_steps_per_second=round((self.env_steps - steps) / max(self._elapsed() - seconds, 1e-9), 2),
    )

  def _evaluate(self) -> dict:
    result = self.evaluator(self.eval_env, self.agent.policy)
    self.eval_py_env.pop_game_returns()  # evaluation games are counted by the evaluator
    self.eval_seconds.assign_add(result.seconds)
    fields = {**self._fields(), "eval_seconds": round(float(self.eval_seconds), 3)}
    record = self.recorder.evaluation(fields, result.summary())
    self.last_eval = record
    # Now, not at the next export: `best` is the policy that was evaluated.
    with self._writing("best policy", self.folder.path(rf.POLICIES)):
      self.policy_exporter.offer_best(self.env_steps, record["average_return"])
    self._video()
    return record

  def _video(self, final: bool = False) -> None:
    if not self.videos.due(self.env_steps, final):
      return
    path = self.videos.path(self.env_steps)
    with self._writing("evaluation video", path):
      recording = self.videos.record(self.env_steps, self.agent.policy)
    shown = ", ".join(f"{r:g}" for r in recording.returns)
    print(f"video: {path} ({recording.frames} frames, return {shown})", file=sys.stderr)

  def _save(self) -> None:
    # Not twice at one point (the final save right after a periodic one, a resumed finished
    # run): rewriting a checkpoint in place is not atomic, so a kill then could damage the
    # very checkpoint a resume needs; only the clocks would differ.
    if self._saved_at == (self.env_steps, int(self.train_step)):
      return
    self.wall_seconds.assign(self._elapsed())
    self._clock_start = time.perf_counter()
    with self._writing("checkpoint save", self.folder.path(rf.CHECKPOINTS) / f"ckpt-{self.env_steps}"):
      self.checkpointer.save(self.env_steps)
    self._saved_at = (self.env_steps, int(self.train_step))

  def _export(self, numbered: bool = True) -> None:
    with self._writing("policy export", self.policy_exporter.staging):
      self.policy_exporter.export(self.env_steps if numbered else None)

  def _finish(self) -> dict:
    if self.last_eval is None or self.last_eval["env_steps"] != self.env_steps:
      self._evaluate()
    self._video(final=True)
    self._save()
    self._export()
    self.recorder.learning_curve()
    self.recorder.flush()
    return self.last_eval
