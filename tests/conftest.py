"""Shared helpers: run the real command-line tools as subprocesses at toy scale."""

from __future__ import annotations

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
  env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
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


def run_module(module: str, *args: str, timeout=300):
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO,
    env=cli_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory) -> Path:
  """One finished toy-scale DQN CartPole run, shared by the tests that only read it."""
  root = tmp_path_factory.mktemp("toy") / "run"
  result = run_train(root)
  assert result.returncode == 0, result.stderr[-3000:]
  return root
