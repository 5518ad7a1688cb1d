"""Checkpoints (to resume a run) and policy exports (to use its result), kept apart.

    pipelines-train ... --root_dir=runs/x   # re-run the same command to resume

TensorFlow writes a checkpoint's data and index first and only then points the
`checkpoint` state file at it (an atomic rename), so a save cut short by SIGKILL is
never the one restored. Policy exports are written beside the live one and swapped in
by rename.

State too large for TF variables (a replay of 1M Atari frames) goes to files: any item with
`save_to(directory)`/`restore_from(directory)` is written to `ckpt-<N>.<name>/` (through a
temporary folder and a rename) *before* the TF checkpoint that names step N, so the latest
TF checkpoint always has its files; files of checkpoints no longer kept are deleted.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import tensorflow as tf
from tf_agents.policies import policy_saver


class Checkpointer:
  """One `tf.train.Checkpoint` of everything a run needs to continue, restored at start."""

  def __init__(self, directory: Path, max_to_keep: int = 2, **items):
    self._files = {name: item for name, item in items.items() if hasattr(item, "save_to")}
    trackables = {name: item for name, item in items.items() if name not in self._files}
    self._directory = Path(directory)
    self._checkpoint = tf.train.Checkpoint(**trackables)
    self._manager = tf.train.CheckpointManager(self._checkpoint, str(directory), max_to_keep)

  def restore(self) -> bool:
    """Restores the latest complete checkpoint; False when there is none."""
    latest = self._manager.latest_checkpoint
    if latest is None:
      return False
    self._checkpoint.restore(latest).assert_existing_objects_matched()
    for name, item in self._files.items():
      start = time.perf_counter()
      item.restore_from(Path(f"{latest}.{name}"))
      print(f"Restored {name} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return True

  def save(self, env_steps: int) -> str:
    for name, item in self._files.items():
      start = time.perf_counter()
      final = self._directory / f"ckpt-{env_steps}.{name}"
      staging = final.with_name(final.name + ".tmp")
      shutil.rmtree(staging, ignore_errors=True)
      item.save_to(staging)
      shutil.rmtree(final, ignore_errors=True)
      staging.rename(final)
      print(f"Saved {name} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    path = self._manager.save(checkpoint_number=env_steps)
    kept = {Path(p).name for p in self._manager.checkpoints}
    for name in self._files:
      for folder in self._directory.glob(f"ckpt-*.{name}"):
        if folder.name.removesuffix(f".{name}") not in kept:
          shutil.rmtree(folder, ignore_errors=True)
    return path


class PolicyExporter:
  """Exports a policy as a SavedModel (TF-Agents `PolicySaver`) to `directory`."""

  def __init__(self, policy, train_step: tf.Variable, directory: Path):
    self._saver = policy_saver.PolicySaver(policy, train_step=train_step)
    self._directory = Path(directory)

  def export(self) -> None:
    staging = self._directory.with_name(self._directory.name + ".new")
    previous = self._directory.with_name(self._directory.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    self._saver.save(str(staging))
    if self._directory.exists():
      shutil.rmtree(previous, ignore_errors=True)
      self._directory.rename(previous)
    staging.rename(self._directory)
    shutil.rmtree(previous, ignore_errors=True)


def load_saved_policy(directory: Path):
  """Loads an exported policy (`.action`, `.get_initial_state`); falls back to the previous
  export if the process died between the two renames of a swap."""
  directory = Path(directory)
  if not directory.exists():
    directory = directory.with_name(directory.name + ".old")
  return tf.saved_model.load(str(directory))
