"""Checkpoints (to resume a run) and policy exports (to use its result), kept apart.

    pipelines-train ... --root_dir=runs/x   # re-run the same command to resume

TensorFlow writes a checkpoint's data and index first and only then points the
`checkpoint` state file at it (an atomic rename), so a save cut short by SIGKILL is
never the one restored. Policy exports are written beside the live one and swapped in
by rename; a failed export leaves nothing behind. Every export (and every new best
evaluation) also leaves the policy's variables in `policies/<env_steps>/`, kept for good:

    pipelines-evaluate --root_dir=runs/x --step=20000   # or --step=best

State too large for TF variables (a replay of 1M Atari frames) goes to files: any item with
`save_to(directory)`/`restore_from(directory)` is written to `ckpt-<N>.<name>/` (through a
temporary folder and a rename), then `ckpt-<N>.manifest.json` records each file's size and
CRC-32, and only then is the TF checkpoint that names step N written; files of checkpoints
no longer kept are deleted. A save that fails (disk full) removes what it wrote.

Restore tries the newest checkpoint first and checks it whole before loading any of it: the
manifest's sizes and checksums, then every tensor of the TF checkpoint (TensorFlow checks
each one's CRC-32C). One that fails (a disk fault, a copy that did not finish) is reported
in one line and the next older one is tried; once one loads, the damaged ones are moved to
`damaged/ckpt-<N>/` for inspection and the `checkpoint` state file is rewritten to list what
remains. If none loads, nothing is moved and one error names them. Checkpoints written before
manifests existed restore as before, their side files unchecked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management
from tf_agents.policies import policy_saver

from pipelines.errors import PipelineError
from pipelines.storage.run_folder import BEST_POLICY

MANIFEST = "manifest.json"  # ckpt-<N>.manifest.json: size and CRC-32 of each side file
DAMAGED = "damaged"  # checkpoints that did not load, kept for inspection
_CHUNK = 16 << 20


class _Unreadable(Exception):
  """One part of a checkpoint that cannot be used: which file, and why."""

  def __init__(self, path: Path | str, reason: str, directory: Path):
    path = Path(path)
    # From the checkpoints folder on: `ckpt-400.replay_buffer/frames.npy`.
    shown = path.relative_to(directory) if path.is_relative_to(directory) else path
    super().__init__(f"{shown}: {reason}")


@runtime_checkable
class SavedBeside(Protocol):
  """A checkpoint item that is too big or not TensorFlow state (the frame store's arrays, a
  Reverb table): written to `ckpt-<N>.<name>/` beside the TF checkpoint and covered by its
  manifest."""

  def save_to(self, directory: Path) -> None: ...

  def restore_from(self, directory: Path) -> None: ...


class Checkpointer:
  """One `tf.train.Checkpoint` of everything a run needs to continue, restored at start.

  `last_complete`: env steps of the newest checkpoint known to be complete on disk (None
  before the first), what a failed save leaves to resume from.
  """

  def __init__(self, directory: Path, max_to_keep: int = 2, **items):
    self._files = {name: item for name, item in items.items() if isinstance(item, SavedBeside)}
    trackables = {name: item for name, item in items.items() if name not in self._files}
    self._directory = Path(directory)
    self._max_to_keep = max_to_keep
    self._checkpoint = tf.train.Checkpoint(**trackables)
    self._manager = self._new_manager()
    self.last_complete: int | None = None

  def _new_manager(self) -> tf.train.CheckpointManager:
    return tf.train.CheckpointManager(self._checkpoint, str(self._directory), self._max_to_keep)

  def _prefix(self, number: int) -> Path:
    return self._directory / f"ckpt-{number}"

  def restore(self) -> bool:
    """Restores the newest checkpoint that loads whole; False when there is none.

    Raises PipelineError, moving nothing, when there are checkpoints and none loads.
    """
    failed: list[tuple[int, str]] = []
    for number in self._candidates():
      try:
        self._verify(number)
        self._load(number)
      except MemoryError:
        raise
      except Exception as e:  # noqa: BLE001  (whatever the fault, an older checkpoint may load)
        failed.append((number, str(e) if isinstance(e, _Unreadable) else f"ckpt-{number}: {_first_line(e)}"))
        continue
      for damaged, reason in failed:
        moved = self._set_aside(damaged)
        print(
          f"warning: checkpoint ckpt-{damaged} does not load ({reason}); moved it to {moved} "
          f"and resumed from ckpt-{number}",
          file=sys.stderr,
        )
      if failed or self._manager.latest_checkpoint != str(self._prefix(number)):
        self._rewrite_state(number)
      self.last_complete = number
      return True
    if failed:
      reasons = "; ".join(reason for _, reason in failed)
      raise PipelineError(
        f"no checkpoint in {self._directory} loads ({reasons}); nothing was moved or deleted. "
        "To start fresh, use a new --root_dir; to resume, put back intact copies of these files"
      )
    return False

  def _candidates(self) -> list[int]:
    """Checkpoint numbers (env steps), newest first: those the state file lists, and any
    other `ckpt-<N>.index` (the state file lost, or a save killed just before updating it)."""
    listed = [*self._manager.checkpoints, self._manager.latest_checkpoint or ""]
    on_disk = [str(p.with_suffix("")) for p in self._directory.glob("ckpt-*.index")]
    numbers = {int(m.group(1)) for p in listed + on_disk if (m := re.fullmatch(r"ckpt-(\d+)", Path(p).name))}
    return sorted(numbers, reverse=True)

  def _verify(self, number: int) -> None:
    """Reads the whole checkpoint without loading it: side files against the manifest,
    then every tensor (slot variables are restored lazily, at the first train step, so a
    damaged tensor would surface only then)."""
    prefix = self._prefix(number)
    manifest = Path(f"{prefix}.{MANIFEST}")
    if self._files and manifest.exists():
      try:
        records = json.loads(manifest.read_text())["files"]
      except (ValueError, KeyError, TypeError) as e:
        raise _Unreadable(manifest, f"not a manifest ({_first_line(e)})", self._directory) from None
      for relative, record in records.items():
        name, _, inside = relative.partition("/")
        path = Path(f"{prefix}.{name}") / inside
        if not path.is_file():
          raise _Unreadable(path, "missing", self._directory)
        if path.stat().st_size != record["bytes"]:
          raise _Unreadable(path, f"{path.stat().st_size} bytes, {record['bytes']} written", self._directory)
        if _crc32(path) != record["crc32"]:
          raise _Unreadable(path, "checksum differs from the one written", self._directory)
    try:
      reader = tf.train.load_checkpoint(str(prefix))
    except Exception as e:  # noqa: BLE001  (TensorFlow's errors, and IndexError on a short index)
      raise _Unreadable(f"{prefix}.index", _first_line(e), self._directory) from None
    for key in reader.get_variable_to_dtype_map():
      try:
        reader.get_tensor(key)
      except Exception as e:  # noqa: BLE001
        data = sorted(self._directory.glob(f"{prefix.name}.data-*"))
        raise _Unreadable(data[0] if data else f"{prefix}.data", _first_line(e), self._directory) from None

  def _load(self, number: int) -> None:
    """Loads all of checkpoint `number`. A failure part way leaves the run half loaded: the
    caller then loads an older checkpoint whole (every variable, every side item) or stops."""
    prefix = self._prefix(number)
    try:
      self._checkpoint.restore(str(prefix)).assert_existing_objects_matched()
    except Exception as e:  # noqa: BLE001
      raise _Unreadable(prefix, _first_line(e), self._directory) from None
    for name, item in self._files.items():
      start = time.perf_counter()
      try:
        item.restore_from(Path(f"{prefix}.{name}"))
      except MemoryError:
        raise
      except Exception as e:  # noqa: BLE001  (np.load's ValueError, Reverb's RuntimeError, ...)
        reason = f"{type(e).__name__}: {_first_line(e)}"
        raise _Unreadable(f"{prefix}.{name}", reason, self._directory) from None
      print(f"Restored {name} in {time.perf_counter() - start:.1f} s", file=sys.stderr)

  def _set_aside(self, number: int) -> Path:
    """Moves every file of checkpoint `number` to `damaged/ckpt-<N>[-k]/`; returns that folder."""
    name = self._prefix(number).name
    target = self._directory / DAMAGED / name
    k = 1
    while target.exists():
      k += 1
      target = self._directory / DAMAGED / f"{name}-{k}"
    target.mkdir(parents=True)
    for path in self._directory.glob(f"{name}.*"):
      path.rename(target / path.name)
    return target

  def _rewrite_state(self, number: int) -> None:
    """Points the `checkpoint` state file at `number` and lists the checkpoints still on
    disk up to it, so the manager prunes and saves as if `number` had been the last save."""
    state = tf.train.get_checkpoint_state(str(self._directory))
    written = {}
    if state is not None:
      timestamps = state.all_model_checkpoint_timestamps
      written = dict(zip(state.all_model_checkpoint_paths, timestamps, strict=False))
    kept = [n for n in sorted(self._candidates()) if n <= number]
    paths = [str(self._prefix(n)) for n in kept if Path(f"{self._prefix(n)}.index").exists()]
    stamps = [written.get(p) or Path(f"{p}.index").stat().st_mtime for p in paths]
    checkpoint_management.update_checkpoint_state_internal(
      str(self._directory),
      model_checkpoint_path=str(self._prefix(number)),
      all_model_checkpoint_paths=paths,
      all_model_checkpoint_timestamps=stamps,
      last_preserved_timestamp=min(stamps) - 1,  # the manager manages only newer ones
      save_relative_paths=True,  # the run folder may be moved or copied
    )
    self._manager = self._new_manager()

  def save(self, env_steps: int) -> str:
    """Writes checkpoint `ckpt-<env_steps>`; on any failure removes what it wrote and raises."""
    if self.last_complete == env_steps:  # overwritten in place: not complete while it is written
      earlier = [int(Path(p).name.split("-")[1]) for p in self._manager.checkpoints]
      self.last_complete = max((n for n in earlier if n != env_steps), default=None)
    try:
      records = {}
      for name, item in self._files.items():
        start = time.perf_counter()
        final = self._directory / f"ckpt-{env_steps}.{name}"
        staging = final.with_name(final.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        item.save_to(staging)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        records.update(_file_records(final, name))
        print(f"Saved {name} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
      if self._files:  # after the side files, before the TF checkpoint that refers to them
        _write_atomically(Path(f"{self._prefix(env_steps)}.{MANIFEST}"), json.dumps({"files": records}))
      path = self._manager.save(checkpoint_number=env_steps)
    except BaseException:
      self._discard_incomplete(env_steps)
      raise
    self.last_complete = env_steps
    kept = {Path(p).name for p in self._manager.checkpoints}
    for suffix in [*self._files, MANIFEST]:
      for leftover in self._directory.glob(f"ckpt-*.{suffix}"):
        if leftover.name.removesuffix(f".{suffix}") not in kept:
          _remove(leftover)
    return path

  def _discard_incomplete(self, number: int) -> None:
    """After a failed save: staging folders and TensorFlow's temporary files go; the side
    files and manifest go too unless a complete TF checkpoint of that number refers to them."""
    name = self._prefix(number).name
    leftovers = [*self._directory.glob(f"{name}.*.tmp"), *self._directory.glob(f"{name}_temp*")]
    leftovers += self._directory.glob(f".{name}.{MANIFEST}.*")
    if not Path(f"{self._prefix(number)}.index").exists():
      leftovers += self._directory.glob(f"{name}.*")
    for path in leftovers:
      _remove(path)


class PolicyExporter:
  """Exports a policy (TF-Agents `PolicySaver`): the latest as a SavedModel in `directory`,
  and, with `history`, every export and every new best evaluation as a variables-only
  checkpoint `history/<env_steps>/` (`PolicySaver.save_checkpoint`) that the SavedModel's
  graph loads (`load_saved_policy(directory, history/<env_steps>)`), so a numbered policy
  costs its weights only. `history/best.json` names the best one: `{"env_steps", "average_return"}`.
  """

  def __init__(
    self,
    policy,
    train_step: tf.Variable,
    directory: Path,
    history: Path | None = None,
    env_steps: tf.Variable | None = None,
  ):
    # The env steps ride along as TF-Agents' policy metadata (`exported_env_steps`), so
    # whoever loads an export knows where on the run's axis it was taken.
    metadata = {"env_steps": env_steps} if env_steps is not None else None
    self._saver = policy_saver.PolicySaver(policy, train_step=train_step, metadata=metadata)
    self._directory = Path(directory)
    self._history = None if history is None else Path(history)

  @property
  def staging(self) -> Path:
    """Where an export is written before it replaces `directory`."""
    return self._directory.with_name(self._directory.name + ".new")

  def export(self, env_steps: int | None = None) -> None:
    """Writes the SavedModel, then (with `history` and `env_steps`) policy `env_steps`."""
    staging = self.staging
    previous = self._directory.with_name(self._directory.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    try:
      self._saver.save(str(staging))
    except BaseException:
      shutil.rmtree(staging, ignore_errors=True)  # half an export frees its space
      raise
    if self._directory.exists():
      shutil.rmtree(previous, ignore_errors=True)
      self._directory.rename(previous)
    staging.rename(self._directory)
    shutil.rmtree(previous, ignore_errors=True)
    if self._history is not None and env_steps is not None:
      self.save_numbered(env_steps)

  def save_numbered(self, env_steps: int) -> Path:
    """Writes the policy's variables to `history/<env_steps>/` (through a staging folder and
    a rename, so a listed step is always whole); returns that folder.

    A step already listed is kept as it is: the weights at an env step are the run's (no
    gradient step between an evaluation and the export at the same step, and a resume
    removes the policies after its checkpoint), so an export and a new best at one step
    write them once."""
    final = self._history / str(env_steps)
    if final.is_dir():
      return final
    staging = self._history / f".{env_steps}.new"
    shutil.rmtree(staging, ignore_errors=True)
    try:
      self._saver.save_checkpoint(str(staging))
    except BaseException:
      shutil.rmtree(staging, ignore_errors=True)
      raise
    staging.rename(final)
    return final

  def best(self) -> dict | None:
    """`{"env_steps", "average_return"}` of the best policy kept, or None."""
    try:
      return json.loads((self._history / BEST_POLICY).read_text())
    except (FileNotFoundError, ValueError):
      return None

  def offer_best(self, env_steps: int, average_return: float) -> bool:
    """Keeps the current weights as the best policy if `average_return` beats the best so
    far (a tie keeps the earlier one); call it right after evaluating. True when kept."""
    if self._history is None:
      return False
    best = self.best()
    if best is not None and average_return <= best["average_return"]:
      return False
    self.save_numbered(env_steps)
    self._set_best(env_steps, average_return)
    return True

  def _set_best(self, env_steps: int, average_return: float) -> None:
    record = {"env_steps": env_steps, "average_return": average_return}
    _write_atomically(self._history / BEST_POLICY, json.dumps(record) + "\n")

  def discard_after(self, env_steps: int, evaluations: list[dict]) -> list[int]:
    """After a resume from a checkpoint at `env_steps`: removes the policies of the future
    that was thrown away (steps > `env_steps`), and points best.json at the best evaluation
    that is still on record and has its policy (`evaluations`: metrics.jsonl, truncated).
    Returns the removed steps."""
    if self._history is None or not self._history.is_dir():
      return []
    removed = [step for step in numbered_policies(self._history) if step > env_steps]
    for step in removed:
      shutil.rmtree(self._history / str(step))
    for leftover in self._history.glob(".*.new"):  # a write cut short by a kill
      shutil.rmtree(leftover, ignore_errors=True)
    best = self.best()
    if best is None or best["env_steps"] > env_steps:
      kept = set(numbered_policies(self._history))
      candidates = [r for r in evaluations if r["env_steps"] in kept]
      if candidates:  # max() keeps the first of equal returns, as offer_best does
        top = max(candidates, key=lambda r: r["average_return"])
        self._set_best(top["env_steps"], top["average_return"])
      else:
        (self._history / BEST_POLICY).unlink(missing_ok=True)
    return removed


def numbered_policies(history: Path) -> list[int]:
  """Env steps of the numbered policies in `history`, ascending."""
  if not Path(history).is_dir():
    return []
  return sorted(int(p.name) for p in Path(history).iterdir() if p.name.isdigit() and p.is_dir())


def load_saved_policy(directory: Path, variables: Path | None = None):
  """Loads an exported policy (`.action`, `.get_initial_state`); falls back to the previous
  export if the process died between the two renames of a swap. `variables`: a numbered
  policy (`PolicyExporter.save_numbered`) whose weights and train step replace the export's,
  read as TF-Agents' `SavedModelPyTFEagerPolicy.update_from_checkpoint` reads them."""
  directory = Path(directory)
  if not directory.exists():
    directory = directory.with_name(directory.name + ".old")
  policy = tf.saved_model.load(str(directory))
  if variables is not None:
    prefix = Path(variables) / tf.saved_model.VARIABLES_DIRECTORY / tf.saved_model.VARIABLES_FILENAME
    status = tf.train.Checkpoint(policy=policy).read(str(prefix))
    status.assert_existing_objects_matched().expect_partial()
  return policy


def exported_env_steps(policy) -> int | None:
  """The env steps at which `load_saved_policy`'s policy was exported (None: an export
  written before exports carried them)."""
  metadata = policy.get_metadata()
  return int(metadata["env_steps"]) if "env_steps" in metadata else None


def _first_line(error: BaseException) -> str:
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0][:200]


def _crc32(path: Path) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def _file_records(folder: Path, name: str) -> dict[str, dict[str, int]]:
  """`{"<name>/<path in folder>": {"bytes": ..., "crc32": ...}}` for every file of `folder`."""
  return {
    f"{name}/{path.relative_to(folder).as_posix()}": {"bytes": path.stat().st_size, "crc32": _crc32(path)}
    for path in sorted(folder.rglob("*"))
    if path.is_file()
  }


def _write_atomically(path: Path, text: str) -> None:
  temporary = path.with_name(f".{path.name}.{os.getpid()}")
  try:
    with open(temporary, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  finally:
    temporary.unlink(missing_ok=True)


def _remove(path: Path) -> None:
  if path.is_dir():
    shutil.rmtree(path, ignore_errors=True)
  else:
    path.unlink(missing_ok=True)
