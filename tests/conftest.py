"""Shared helpers: run experiments at toy scale, in this process or through the real command line.

`run_train` launches `python -m pipelines.train` as a subprocess: for tests about the command
line itself (exit codes, error lines, signals, kills, locks). `train_here` runs the same
experiment inside the test process, sharing its TensorFlow start-up (~5-10 s a launch on
2 cores): for tests about what an experiment does (agents, learning).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# A few hundred env steps: every phase of the loop runs, nothing learns.
TOY_BINDINGS = [
  "run_experiment.num_env_steps = 400",
  "run_experiment.eval_interval = 100",
  "run_experiment.checkpoint_interval = 100",
  "run_experiment.policy_export_interval = 200",
  "run_experiment.target_return = None",
  "OffPolicyTrainer.initial_collect_steps = 100",
  "Evaluator.num_episodes = 2",
  "eval/make_environment.num_envs = 2",
]


def cli_env() -> dict:
  env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")  # what `cli` sets by default
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return env


def train_command(root_dir, gin_file="gin/dqn_cartpole.gin", bindings=(), toy=True) -> list[str]:
  command = [sys.executable, "-m", "pipelines.train", f"--gin_file={gin_file}", f"--root_dir={root_dir}"]
  for binding in [*(TOY_BINDINGS if toy else []), *bindings]:
    command.append(f"--gin_bindings={binding}")
  return command


def run_train(root_dir, gin_file="gin/dqn_cartpole.gin", bindings=(), toy=True, timeout=600):
  return subprocess.run(
    train_command(root_dir, gin_file, bindings, toy),
    cwd=REPO,
    env=cli_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def train_here(
  root_dir, gin_file="gin/dqn_cartpole.gin", bindings=(), toy=True, init_from=None, init_replay=False
) -> subprocess.CompletedProcess:
  """`pipelines-train` in this process: the same gin parsing, run and output lines.

  Returns what `run_train` returns (exit code 0, or 2 with the one error line on stderr);
  command.txt records the equivalent command. Gin's global config is cleared around the run.
  """
  import gin

  from pipelines import cli, configurables  # noqa: F401  registers every configurable
  from pipelines.training import experiment  # noqa: F401  registers every configurable

  command = train_command(root_dir, gin_file, bindings, toy)
  flags = [arg.split("=", 1) for arg in command[3:]]
  command += [f"--init_from={init_from}"] if init_from else []
  command += ["--init_replay"] if init_replay else []
  gin_files = [str(REPO / value) for name, value in flags if name == "--gin_file"]
  gin_bindings = [value for name, value in flags if name == "--gin_bindings"]
  out, err = io.StringIO(), io.StringIO()

  def train() -> int:
    cli.parse_gin(gin_files, gin_bindings)
    final = experiment.run_experiment(str(root_dir), init_from=init_from, init_replay=init_replay)
    print(f"Run folder: {root_dir}")
    print("Final evaluation: " + json.dumps(final))
    return 0

  orig_argv = sys.orig_argv
  sys.orig_argv = command  # what command.txt records
  gin.clear_config()
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      code = cli.main_with_errors(train, "pipelines-train")
  finally:
    gin.clear_config()
    sys.orig_argv = orig_argv
  return subprocess.CompletedProcess(command, code, out.getvalue(), err.getvalue())


def run_module(module: str, *args: str, timeout=300):
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO,
    env=cli_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )


@pytest.fixture(autouse=True)
def _no_gin_config_left_behind():
  """A test's parsed bindings (e.g. q_network.torch_init from a protocol test) must not reach
  the next test that builds a network with defaults, in whatever order pytest runs them."""
  yield
  import gin

  gin.clear_config()


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory) -> Path:
  """One finished toy-scale DQN CartPole run, shared by the tests that only read it."""
  root = tmp_path_factory.mktemp("toy") / "run"
  result = train_here(root)
  assert result.returncode == 0, result.stderr[-3000:]
  return root
