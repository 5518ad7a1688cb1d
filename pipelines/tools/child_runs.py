"""Training runs as child processes: what pipelines-sweep and pipelines-tune share.

    python -c "from pipelines.tools import child_runs; print(child_runs.train_command(['a.gin'], [], 'x'))"

A child is the real `python -m pipelines.train` command, so a sweep or tuning run folder
is exactly what a hand-typed run would write (and is resumed the same way). Children are
told to die with their parent (Linux `PR_SET_PDEATHSIG`): SIGKILL a sweep and its runs
get SIGTERM, which makes them save a checkpoint and exit, instead of living on as
orphans that hold their run folders' locks.
"""

from __future__ import annotations

import ctypes
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import gin

from pipelines import cli, devices
from pipelines.storage import run_folder as rf

LOGS = rf.LOGS  # child stdout+stderr, one file per run, beside (not inside) the run folders
_PR_SET_PDEATHSIG = 1
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])  # the folder holding pipelines/


def train_command(gin_files: Sequence[str], bindings: Sequence[str], root_dir: str | Path) -> list[str]:
  command = [sys.executable, "-m", "pipelines.train", *(f"--gin_file={f}" for f in gin_files)]
  command += [f"--gin_bindings={b}" for b in bindings]
  return command + [f"--root_dir={root_dir}"]


def child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
  """The environment of a child run: this one (`environ`, default `os.environ`), plus output
  line by line, quiet TensorFlow, this package importable, and GPU memory growth.

  Growth so that children sharing a GPU (parallel sweep runs, trials, launch roles) each take
  what they use instead of the first one reserving the whole GPU; setdefault, so a user's own
  `TF_FORCE_GPU_ALLOW_GROWTH` wins.
  """
  env = dict(os.environ if environ is None else environ, PYTHONUNBUFFERED="1")
  # Only FATAL lines (level 2 still let cuDNN/cuFFT/cuBLAS registration errors into every
  # role's log); `cli` already set the parent's level, keeping a user's or --verbose's own.
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  env.setdefault(devices.ALLOW_GROWTH_ENV, "true")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
  return env


def check_config(gin_files: Sequence[str], bindings: Sequence[str]) -> dict:
  """Parses the config in this process, so an unknown name fails before anything launches.

  Returns the run's budget (`num_env_steps`, `target_return`), used to tell finished runs.
  """
  from pipelines import configurables

  gin.clear_config()
  try:
    cli.parse_gin(gin_files, bindings)
    run_experiment = configurables.experiment.run_experiment
    defaults = inspect.signature(run_experiment).parameters
    budget = {}
    for name in ("num_env_steps", "target_return"):
      try:
        budget[name] = gin.query_parameter(f"run_experiment.{name}")
      except ValueError:  # not bound: the function's default applies
        budget[name] = defaults[name].default
    return budget
  finally:
    gin.clear_config()


def is_complete(run_dir: Path, num_env_steps: int, target_return: float | None) -> bool:
  """True once the run's last evaluation met its stop rule and the run finished.

  The learning curve is the last thing a run writes (after its final checkpoint and
  policy export), so its presence marks a finished `_finish`; metrics alone could
  belong to a run killed between its last evaluation and its final save.
  """
  folder = rf.RunFolder(run_dir)
  if not folder.path(rf.LEARNING_CURVE).exists():
    return False
  records = folder.read_metrics()
  if not records:
    return False
  last = records[-1]
  reached = target_return is not None and last["average_return"] >= target_return
  return last["env_steps"] >= num_env_steps or reached


_libc = ctypes.CDLL(None, use_errno=True)


def _die_with(parent_pid: int) -> None:
  _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
  if os.getppid() != parent_pid:  # the parent died before prctl took effect
    os._exit(1)


class RestartBudget:
  """How often a supervisor restarts a child that died: `limit` times in a row, where a child
  that had run `healthy_seconds` before dying starts a new count. A child dying at start-up
  (a broken machine, a bug) stops the supervisor after `limit` tries, while a multi-day run
  outlives any number of faults spread over its life."""

  def __init__(self, limit: int = 5, healthy_seconds: float = 600.0):
    self.limit, self.healthy_seconds = limit, healthy_seconds
    self.used = 0

  def spend(self, uptime: float) -> bool:
    """Counts one restart of a child that ran `uptime` seconds; False when none is left."""
    if uptime >= self.healthy_seconds:
      self.used = 0
    if self.used >= self.limit:
      return False
    self.used += 1
    return True


class TrainProcess:
  """One `pipelines.train` child writing to its own log file."""

  def __init__(self, command: list[str], log_path: Path, own_session: bool = False):
    """own_session: keep the child out of the terminal's process group, so Ctrl-C reaches
    only the parent, which then stops its children in its own order."""
    self.command = command
    self.log_path = log_path
    self.started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    parent_pid = os.getpid()
    with open(log_path, "a") as log:  # appended: a resumed run keeps its earlier output
      log.write(f"$ {' '.join(command)}\n")
      log.flush()
      self._process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=child_env(),
        preexec_fn=lambda: _die_with(parent_pid),
        start_new_session=own_session,
      )

  @property
  def pid(self) -> int:
    return self._process.pid

  def poll(self) -> int | None:
    return self._process.poll()

  @property
  def seconds(self) -> float:
    return time.monotonic() - self.started

  def terminate(self) -> None:
    """SIGTERM: the run saves a checkpoint and exits (resumable)."""
    if self._process.poll() is None:
      self._process.terminate()

  def wait(self, timeout: float | None = None) -> int:
    try:
      return self._process.wait(timeout)
    except subprocess.TimeoutExpired:
      self._process.kill()
      return self._process.wait()

  def error_line(self) -> str:
    """The child's one-line error, or the last line of its log."""
    try:
      lines = [line.strip() for line in self.log_path.read_text().splitlines() if line.strip()]
    except OSError:
      return "?"
    errors = [line for line in lines if ": error:" in line]
    return (errors or lines or ["(empty log)"])[-1]
