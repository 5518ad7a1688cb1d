"""pipelines-launch on Breakout at toy scale: the Dopamine gin file, unchanged, runs distributed
with its replay's frames stored once in the Reverb server.

    PYTHONPATH=. .venv/bin/python -m pytest -q -m slow tests/distributed/test_atari_launch.py
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.storage import run_folder as rf

from conftest import REPO, cli_env

# A few hundred agent steps of random play, one evaluation game capped at 800 frames: every
# role starts, the learner trains on frame-once items and evaluates; nothing learns.
TOY_BREAKOUT = [
  "run_experiment.num_env_steps = 1_200",
  "run_experiment.eval_interval = 600",
  "run_experiment.checkpoint_interval = 600",
  "run_experiment.policy_export_interval = 600",
  "run_experiment.log_interval = 600",
  "OffPolicyTrainer.initial_collect_steps = 200",
  "frame_stack_replay.capacity = 5_000",
  "linear_schedule.delay = 200",
  "linear_schedule.duration = 1_000",
  "Evaluator.num_episodes = 1",
  "eval/make_environment.num_envs = 1",
  "eval/AtariProtocol.max_episode_frames = 800",
]


@pytest.mark.slow
def test_breakout_trains_with_two_actors_on_frame_once_replay(tmp_path):
  """Slow: four TensorFlow processes start and trace the Nature CNN (90 s on this shared
  2-core machine by hand; the in-process tests/replay/test_reverb_frames.py checks the items)."""
  root = tmp_path / "run"
  command = [sys.executable, "-m", "pipelines.launch", "--gin_file=gin/dqn_breakout_dopamine.gin"]
  command += [f"--gin_bindings={b}" for b in TOY_BREAKOUT]
  command += [f"--root_dir={root}", "--num_actors=2", "--noeval"]
  result = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  records = rf.RunFolder(root).read_metrics()
  assert records[-1]["env_steps"] >= 1_200 and records[-1]["train_steps"] > 0, records[-1]
  assert records[-1]["frames"] == 4 * records[-1]["env_steps"] and records[-1]["num_episodes"] == 1
  # The server's checkpoint holds the frame-once table (Reverb writes DONE after the tables).
  assert list((root / rf.REPLAY_SERVER).glob("*/DONE"))
  actor_log = (root / rf.LOGS / "actor_0.log").read_text()
  assert "collecting with 1 environment copies" in actor_log
