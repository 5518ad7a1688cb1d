"""The run folder: one directory per run holding everything needed to inspect or re-run it.

    ls runs/x   # operative_config.gin command.txt run.json metrics.jsonl checkpoints/ policy/ ...

All names live here so that every tool (train, evaluate, reports) agrees on them.
Nothing is written until `claim()` succeeds, so a refused launch leaves an existing
run untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shlex
import sys
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from pipelines.errors import PipelineError

OPERATIVE_CONFIG = "operative_config.gin"
COMMAND = "command.txt"
RUN_INFO = "run.json"
METRICS = "metrics.jsonl"
TRAIN_METRICS = "train_metrics.jsonl"  # training records between evaluations (Atari games)
CHECKPOINTS = "checkpoints"
POLICY = "policy"
# Every exported policy: policies/<env_steps>/variables/ (TF-Agents `PolicySaver.save_checkpoint`,
# loaded into policy/'s SavedModel), and best.json naming the step of the best evaluation.
POLICIES = "policies"
BEST_POLICY = "best.json"
TRAIN_SUMMARIES = "train"
EVAL_SUMMARIES = "eval"
LEARNING_CURVE = "learning_curve.png"
# Written by pipelines-launch's other roles, possibly before the learner's first launch.
LOGS = "logs"
REPLAY_SERVER = "replay_server"
LAUNCH_FILES = {LOGS, REPLAY_SERVER}

_PACKAGES = (
  "tensorflow",
  "tf-agents",
  "tensorflow-probability",
  "dm-reverb",
  "gin-config",
  "gymnasium",
  "ale-py",
  "numpy",
)


def atomic_write_text(path: Path, text: str) -> None:
  """Writes `text` to `path` so that readers see the old or the new file, never half."""
  with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=f".{path.name}.") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(f.name, path)


def package_versions() -> dict[str, str]:
  versions = {"python": platform.python_version()}
  for name in _PACKAGES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = "not installed"
  return versions


def _strip_comments(config: str) -> list[str]:
  return [line for line in config.splitlines() if line.strip() and not line.lstrip().startswith("#")]


class RunFolder:
  """Paths of one run plus the lock that keeps a second process out of it."""

  def __init__(self, root_dir: str | os.PathLike):
    self.root = Path(root_dir).expanduser().absolute()
    self._lock_fd: int | None = None

  def path(self, name: str) -> Path:
    return self.root / name

  @property
  def is_run(self) -> bool:
    return self.path(RUN_INFO).exists()

  def check_usable(self) -> None:
    """Refuses a foreign folder (non-empty, not a run) or one that cannot be written."""
    if self.root.exists():
      if not self.root.is_dir():
        raise PipelineError(f"--root_dir {self.root} exists and is not a folder")
      if not self.is_run and any(p.name not in LAUNCH_FILES for p in self.root.iterdir()):
        raise PipelineError(
          f"--root_dir {self.root} is not empty and holds no run ({RUN_INFO} missing); pick a new folder"
        )
      if not os.access(self.root, os.W_OK | os.X_OK):
        raise PipelineError(f"--root_dir {self.root} is not writable")
    else:
      parent = next(p for p in self.root.parents if p.exists())
      if not parent.is_dir():
        raise PipelineError(f"cannot create --root_dir {self.root}: {parent} is not a folder")
      if not os.access(parent, os.W_OK | os.X_OK):
        raise PipelineError(f"cannot create --root_dir {self.root}: {parent} is not writable")

  def check_config(self, operative_config: str) -> None:
    """Refuses to mix runs: a resumed run must have the same operative config."""
    stored = self.path(OPERATIVE_CONFIG)
    if stored.exists() and _strip_comments(stored.read_text()) != _strip_comments(operative_config):
      old, new = set(_strip_comments(stored.read_text())), set(_strip_comments(operative_config))
      changed = sorted(new - old)[:1] or sorted(old - new)[:1]
      raise PipelineError(
        f"--root_dir {self.root} holds a run with a different config "
        f"(first difference: {changed[0].strip() if changed else '?'}); "
        "use a new --root_dir to start fresh, or the same gin files and bindings to resume"
      )

  def lock(self) -> None:
    """Takes an exclusive lock on the folder itself; a second live process is refused."""
    self.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(self.root, os.O_RDONLY)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise PipelineError(
        f"--root_dir {self.root} is in use by another running process; wait for it or pick another folder"
      ) from None
    self._lock_fd = fd

  def unlock(self) -> None:
    if self._lock_fd is not None:
      os.close(self._lock_fd)
      self._lock_fd = None

  def write_metadata(self, operative_config: str, seed: int, argv: Iterable[str] | None = None) -> None:
    """Writes the config, the command line and the versions; kept from the first launch."""
    argv = list(sys.orig_argv if argv is None else argv)  # as typed: `python -m pipelines.train ...`
    command = shlex.join(argv) + "\n"
    # run.json first: it makes the folder a run, so a first launch killed after any of these
    # writes leaves a folder the same command resumes (not a non-empty folder it refuses).
    if not self.is_run:
      info = {"seed": seed, "versions": package_versions(), "cwd": os.getcwd()}
      atomic_write_text(self.path(RUN_INFO), json.dumps(info, indent=2) + "\n")
    if not self.path(OPERATIVE_CONFIG).exists():
      atomic_write_text(self.path(OPERATIVE_CONFIG), operative_config)
    with open(self.path(COMMAND), "a") as f:  # one line per launch, resumes included
      f.write(command)

  def read_info(self) -> dict[str, Any]:
    return json.loads(self.path(RUN_INFO).read_text())

  # metrics.jsonl: one JSON object per evaluation (train_metrics.jsonl: per log interval).
  def append_metrics(self, record: dict[str, Any], name: str = METRICS) -> None:
    """Appends one line; a write that fails part way (disk full) is cut off again, so the
    next record does not run into half a line."""
    line = memoryview((json.dumps(record) + "\n").encode())
    with open(self.path(name), "ab", buffering=0) as f:  # unbuffered: close() writes nothing more
      end = f.seek(0, os.SEEK_END)
      try:
        while line:
          line = line[f.write(line) :]
        os.fsync(f.fileno())
      except OSError:
        with contextlib.suppress(OSError):
          f.truncate(end)
        raise

  def read_metrics(self, name: str = METRICS) -> list[dict[str, Any]]:
    path = self.path(name)
    if not path.exists():
      return []
    records = []
    for line in path.read_text().splitlines():
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:  # a line cut short by a kill
        continue
    return records

  def truncate_metrics(self, env_steps: int, name: str = METRICS) -> None:
    """Drops records past a restored checkpoint so the counters stay monotonic, and a last
    line cut short by a kill, which the next record would otherwise be appended to."""
    path = self.path(name)
    records = self.read_metrics(name)
    kept = [r for r in records if r["env_steps"] <= env_steps]
    text = path.read_text() if path.exists() else ""
    cut_short = bool(text) and not text.endswith("\n")
    if len(kept) != len(records) or cut_short:
      atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
