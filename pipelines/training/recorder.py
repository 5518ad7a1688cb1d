"""What a run writes about itself: TensorBoard scalars and JSONL records, on one clock.

    tensorboard --logdir runs/dqn_cartpole        # train/ and eval/ scalars, x = env steps
    tail -1 runs/dqn_cartpole/metrics.jsonl       # {"env_steps": ..., "train_steps": ..., ...}

One axis: every TensorBoard scalar is written at the run's env steps (summed over copies);
an Atari run also plots its game returns against emulator frames under `frames/`. Train steps
are a value (`charts/train_steps`, a `train_steps` field), never an axis. Every JSONL record
(`metrics.jsonl` per evaluation, `train_metrics.jsonl` per log interval, and the distributed
evaluator's `eval_exports.jsonl`) starts with the same fields: `env_steps`, `frames` (Atari),
`train_steps`, then its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from pipelines.storage import run_folder as rf
from pipelines.tools import plots

# What the loop wraps a write in, so a failed one is one error line: (what, path) -> context.
Writing = Callable[[str, Any], contextlib.AbstractContextManager]


def clock_fields(env_steps: int, train_steps: int, frames_per_env_step: int | None = None) -> dict:
  """The fields every record starts with: `env_steps`, `frames` (Atari only), `train_steps`."""
  frames = {"frames": env_steps * frames_per_env_step} if frames_per_env_step else {}
  return {"env_steps": env_steps, **frames, "train_steps": train_steps}


class Recorder:
  """Owns a run's summary writers (`train/`, `eval/`) and its JSONL records.

  Also keeps the whole-game training returns reported between records: each evaluation
  record and each training record averages the games that ended since the previous one of
  its kind.
  """

  def __init__(
    self,
    folder: rf.RunFolder,
    frames_per_env_step: int | None = None,
    writing: Writing = lambda what, path: contextlib.nullcontext(),
  ):
    self.folder = folder
    self.frames_per_env_step = frames_per_env_step
    self._writing = writing
    self.train_writer = tf.summary.create_file_writer(str(folder.path(rf.TRAIN_SUMMARIES)))
    self.eval_writer = tf.summary.create_file_writer(str(folder.path(rf.EVAL_SUMMARIES)))
    self._games_since_eval: list[float] = []
    self._games_since_log: list[float] = []

  def fields(self, env_steps: int, train_steps: int) -> dict:
    return clock_fields(env_steps, train_steps, self.frames_per_env_step)

  def rewind(self, env_steps: int) -> list[dict]:
    """After a restore: drops the records past `env_steps`; returns the evaluations kept."""
    with self._writing("metrics rewrite", self.folder.path(rf.METRICS)):
      self.folder.truncate_metrics(env_steps)
      self.folder.truncate_metrics(env_steps, rf.TRAIN_METRICS)
    return self.folder.read_metrics()

  def config(self, operative_config: str) -> None:
    """The operative config in TensorBoard's text tab."""
    with self.train_writer.as_default(step=0):
      tf.summary.text("operative_config", "```\n" + operative_config + "\n```")

  def training(self, env_steps: int, train_steps: int, loss: float, metrics: Iterable) -> None:
    """After a chunk of training: the last loss, train steps, and TF-Agents' collection
    metrics (episodes, average return and episode length), at `env_steps`."""
    with self.train_writer.as_default(step=env_steps):
      tf.summary.scalar("losses/loss", loss)
      tf.summary.scalar("charts/train_steps", train_steps)
      for metric in metrics:
        tf.summary.scalar(f"Metrics/{metric.name}", metric.result())

  def games(self, env_steps: int, returns: Sequence[float]) -> None:
    """Whole-game training scores the environment reported (Atari: unclipped, all lives)."""
    if not returns:
      return
    self._games_since_eval.extend(returns)
    self._games_since_log.extend(returns)
    mean = float(np.mean(returns))
    with self.train_writer.as_default(step=env_steps):
      tf.summary.scalar("charts/train_game_return", mean)
    if self.frames_per_env_step:
      with self.train_writer.as_default(step=env_steps * self.frames_per_env_step):
        tf.summary.scalar("frames/train_game_return", mean)

  @staticmethod
  def _game_fields(games: list[float]) -> dict:
    # None when no game ended since the previous record.
    return {"train_game_return": float(np.mean(games)) if games else None, "train_games": len(games)}

  def train_record(self, fields: dict, **values: Any) -> dict:
    """Appends one `train_metrics.jsonl` record: `fields` (`self.fields(...)`, plus wall
    seconds), the games ended since the last one, and `values` (speed)."""
    games, self._games_since_log = self._games_since_log, []
    record = {**fields, **self._game_fields(games), **values}
    with self._writing("training record", self.folder.path(rf.TRAIN_METRICS)):
      self.folder.append_metrics(record, rf.TRAIN_METRICS)
    return record

  def evaluation(self, fields: dict, summary: dict) -> dict:
    """Appends one `metrics.jsonl` record (`fields`, the evaluation's `summary`, the games
    ended since the last evaluation) and writes its scalars; returns the record."""
    games, self._games_since_eval = self._games_since_eval, []
    record = {**fields, **summary, **self._game_fields(games)}
    with self._writing("metrics record", self.folder.path(rf.METRICS)):
      self.folder.append_metrics(record)
    with self.eval_writer.as_default(step=record["env_steps"]):
      for key in ("average_return", "return_std", "average_episode_length"):
        tf.summary.scalar(f"eval/{key}", record[key])
    if "frames" in record:
      with self.eval_writer.as_default(step=record["frames"]):
        tf.summary.scalar("frames/average_return", record["average_return"])
    return record

  def learning_curve(self) -> None:
    """`learning_curve.png`: evaluation returns against env steps (Atari: frames)."""
    x_key = "frames" if self.frames_per_env_step else "env_steps"
    with self._writing("learning curve", self.folder.path(rf.LEARNING_CURVE)):
      plots.learning_curve(self.folder.read_metrics(), self.folder.path(rf.LEARNING_CURVE), x_key=x_key)

  def flush(self) -> None:
    for writer in (self.train_writer, self.eval_writer):
      writer.flush()
