"""The run folder: one directory per run holding everything needed to inspect or re-run it.

    ls runs/x   # operative_config.gin command.txt run.json metrics.jsonl checkpoints/ policy/ ...

All names live here so that every tool (train, evaluate, reports) agrees on them.
Nothing is written until `claim()` succeeds, so a refused launch leaves an existing
run untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from gin import config_parser

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
VIDEOS = "videos"  # videos/<env_steps>.mp4 of evaluations during training (`video.EvalVideos`)
TRAIN_SUMMARIES = "train"
EVAL_SUMMARIES = "eval"
LEARNING_CURVE = "learning_curve.png"
# Written by pipelines-launch's other roles, possibly before the learner's first launch.
LOGS = "logs"
EVAL_EXPORTS = "eval_exports.jsonl"  # the evaluator role's record of each policy export it scored
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


# Settings a resumed run may change: how long it trains, how and when it is evaluated, what
# it writes. They do not change what the agent learns from the steps it takes, so the run
# continues (its schedules follow the restored train step) and the change is recorded.
# Patterns: `selector.param` or `scope/*` (evaluation copies are built in the `eval` scope).
CONTINUABLE = (
  "run_experiment.num_env_steps",
  "run_experiment.eval_interval",
  "run_experiment.checkpoint_interval",
  "run_experiment.policy_export_interval",
  "run_experiment.target_return",
  "run_experiment.log_interval",
  "run_experiment.progress_interval",
  "Evaluator.*",
  "EvalVideos.*",
  "eval/*",
)


def _continuable(key: str) -> bool:
  return any(fnmatch.fnmatchcase(key, pattern) for pattern in CONTINUABLE)


class _Text(str):
  """A gin reference or macro kept as written, so that values compare as text."""

  def __repr__(self) -> str:
    return str(self)


class _AsWritten(config_parser.ParserDelegate):
  def configurable_reference(self, scoped_name, evaluate):
    return _Text(f"@{scoped_name}{'()' if evaluate else ''}")

  def macro(self, name):
    return _Text(f"%{name}")


# Parameters that moved since runs were started: a stored operative config is read with
# today's names, so those runs still resume (and a real change to one is still refused).
# (selector.parameter pattern, replacement), matched after the scope.
MOVED_PARAMETERS = [
  # The Atari protocol, once bound on both paths' factories, is bound once (session 9).
  (
    r"atari(?:_vector)?_env\.(game|episodic_life|zero_stack_on_life_loss|clip_rewards"
    r"|sticky_action_probability|max_episode_frames|noop_max|fire_on_reset)",
    r"AtariProtocol.\1",
  ),
]


def migrated(values: dict[str, str]) -> dict[str, str]:
  """`config_values` of a stored config with `MOVED_PARAMETERS` under their current names."""
  result = {}
  for key, value in values.items():
    scope, _, name = key.rpartition("/")
    for pattern, replacement in MOVED_PARAMETERS:
      name = re.sub(f"^{pattern}$", replacement, name)
    result[f"{scope}/{name}" if scope else name] = value
  return result


def config_values(config: str) -> dict[str, str]:
  """`{"scope/selector.param": "value as gin writes it"}` of a gin config text, macros as
  `{"%NAME": value}` (comments, imports and line wrapping ignored)."""
  values = {}
  for statement in config_parser.ConfigParser(config, _AsWritten()):
    if isinstance(statement, config_parser.BindingStatement):
      scope = f"{statement.scope}/" if statement.scope else ""
      name = f"{statement.selector}.{statement.arg_name}" if statement.arg_name else f"%{statement.selector}"
      values[f"{scope}{name}"] = repr(statement.value)
  return values


def describe_changes(changes: dict[str, list]) -> str:
  """`check_config`'s changes as one line: `key: stored -> new`, or, for a parameter the
  code no longer records (removed, or now passed by the code instead of bound),
  `key = stored (no longer recorded)`."""
  return "; ".join(
    f"{key}: {was} -> {now}" if now is not None else f"{key} = {was} (no longer recorded)"
    for key, (was, now) in changes.items()
  )


def git_state(directory: str | os.PathLike = Path(__file__).parent) -> dict[str, Any] | None:
  """The commit of the code in `directory` and whether its tree had changes, or None when it is
  not in a git checkout (an installed wheel) or git is missing, hangs or fails."""

  def git(*args: str) -> str:
    return subprocess.run(
      ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=5, check=True
    ).stdout

  try:
    commit = git("rev-parse", "HEAD").strip()
    # Untracked files count as dirty too: a new module the run imported is not in the commit.
    dirty = bool(git("status", "--porcelain").strip())
  except (OSError, subprocess.SubprocessError):
    return None
  return {"commit": commit, "dirty": dirty}


def _strip_comments(config: str) -> list[str]:
  return [line for line in config.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def check_root_dir(root: Path, marker: str, what: str, ignored: Iterable[str] = ()) -> None:
  """Refuses a --root_dir that is a file, cannot be written (or created), or is not empty
  and lacks `marker`, the file that makes it a `what` (a run, a sweep, a study); names in
  `ignored` may be there before the marker (pipelines-launch's logs)."""
  ignored = set(ignored)
  if root.exists():
    if not root.is_dir():
      raise PipelineError(f"--root_dir {root} exists and is not a folder")
    if not (root / marker).exists() and any(p.name not in ignored for p in root.iterdir()):
      raise PipelineError(
        f"--root_dir {root} is not empty and holds no {what} ({marker} missing); pick a new folder"
      )
    if not os.access(root, os.W_OK | os.X_OK):
      raise PipelineError(f"--root_dir {root} is not writable")
  else:
    parent = next(p for p in root.parents if p.exists())
    if not parent.is_dir():
      raise PipelineError(f"cannot create --root_dir {root}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
      raise PipelineError(f"cannot create --root_dir {root}: {parent} is not writable")


def wait_until_unlocked(root: Path, timeout: float = 120.0) -> bool:
  """Waits for a dying process (a killed sweep's child) to release a run folder's lock
  (`RunFolder.lock`); False after `timeout` seconds."""
  if not root.is_dir():
    return True
  deadline = time.monotonic() + timeout
  while True:
    fd = os.open(root, os.O_RDONLY)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return True
    except BlockingIOError:
      if time.monotonic() > deadline:
        return False
    finally:
      os.close(fd)  # closing drops our lock too: the run's process takes it next
    time.sleep(0.5)


def refuse_if_in_use(root: Path) -> None:
  """Refuses at once a folder that another live process holds (`RunFolder.lock`), so that a
  command can say so before its slow parsing (TensorFlow's import); creates nothing."""
  if root.is_dir() and not wait_until_unlocked(root, timeout=0):
    raise PipelineError(_in_use(root))


def _in_use(root: Path) -> str:
  return f"--root_dir {root} is in use by another running process; wait for it or pick another folder"


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
    """Refuses a foreign folder (non-empty, not a run), one that cannot be written, or one
    that another live process holds (told before the components are built)."""
    check_root_dir(self.root, RUN_INFO, "run", ignored=LAUNCH_FILES)
    refuse_if_in_use(self.root)

  def check_config(self, operative_config: str, bound: str = "") -> dict[str, list]:
    """Compares a resumed run's operative config with the stored one; returns the settings
    that changed and may (`CONTINUABLE`: budget, evaluation, intervals) as
    `{key: [stored, new]}` ({} for a new run or the same config).

    Refuses, naming the values, any other change: it would alter what the agent learns.
    A parameter the stored config lacks is a newer version of the code: taken at its
    default (not in `bound`, gin's config of explicit bindings) it is no change; one the
    stored config has and the code no longer knows is reported as changed to None.
    """
    stored = self.path(OPERATIVE_CONFIG)
    if not stored.exists() or _strip_comments(stored.read_text()) == _strip_comments(operative_config):
      return {}
    old, new = migrated(config_values(stored.read_text())), config_values(operative_config)
    explicit = config_values(bound)
    differ = {}
    for key in sorted(old.keys() | new.keys()):
      if key not in old and key not in explicit:
        continue  # a parameter added to the code since, at its default
      if old.get(key) != new.get(key):
        differ[key] = [old.get(key), new.get(key)]
    learning = {k: v for k, v in differ.items() if not _continuable(k) and v[1] is not None}
    if learning:
      shown = [f"{key} = {now} (run: {was})" for key, (was, now) in list(learning.items())[:3]]
      more = f" and {len(learning) - 3} more" if len(learning) > 3 else ""
      raise PipelineError(
        f"--root_dir {self.root} holds a run that learns with other settings: {'; '.join(shown)}{more}. "
        "Only the budget and evaluation settings of a run can change when it continues; "
        "to branch with new settings, use a new --root_dir"
      )
    return differ

  def record_info(self, **fields: Any) -> None:
    """Adds fields to run.json (e.g. `init_from`: the run a warm start came from)."""
    atomic_write_text(self.path(RUN_INFO), json.dumps({**self.read_info(), **fields}, indent=2) + "\n")

  def record_config_change(self, operative_config: str, changes: dict[str, list]) -> None:
    """Keeps the config a continued run now trains with and, in run.json, what changed when."""
    info = self.read_info()
    launch = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changes": changes}
    info["config_changes"] = [*info.get("config_changes", []), launch]
    atomic_write_text(self.path(RUN_INFO), json.dumps(info, indent=2) + "\n")
    atomic_write_text(self.path(OPERATIVE_CONFIG), operative_config)

  def lock(self) -> None:
    """Takes an exclusive lock on the folder itself; a second live process is refused."""
    self.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(self.root, os.O_RDONLY)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise PipelineError(_in_use(self.root)) from None
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
      info = {"seed": seed, "versions": package_versions(), "git": git_state(), "cwd": os.getcwd()}
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
