"""Atari videos: the game's RGB screen, from either Atari path, after and during training.

pytest tests/training/test_atari_video.py

Two toy Breakout runs, each trained once: the Nature gin on the wrapper path (`atari_env`)
and the Dopamine gin on ale-py's vector env (`atari_vector_env`, which cannot render), the
latter with videos at evaluation time (`EvalVideos`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import gymnasium as gym
import imageio.v2 as imageio
import pytest

from pipelines.envs import environments
from pipelines.errors import PipelineError
from pipelines.training import video

from conftest import REPO, run_module, train_here

ALE_SCREEN = (210, 160)  # height, width of ALE's RGB screen (not the 84x84 grey observation)
EVAL_CAP = 1_000  # frames per evaluation game: 250 agent steps at most
TOY = [
  "run_experiment.num_env_steps = 200",
  "run_experiment.eval_interval = 200",
  "run_experiment.checkpoint_interval = 200",
  "run_experiment.policy_export_interval = 200",
  "OffPolicyTrainer.initial_collect_steps = 100",
  "Evaluator.num_episodes = 1",
  "eval/make_environment.num_envs = 1",
  f"eval/AtariProtocol.max_episode_frames = {EVAL_CAP}",
  "frame_stack_replay.capacity = 1_000",
]
RUNS = {
  "wrapper": ("gin/dqn_breakout_nature.gin", []),
  "vector": (
    "gin/dqn_breakout_dopamine.gin",
    ["make_environment.vector_env_fn = @atari_vector_env", "EvalVideos.interval = 100"],
  ),
}


@pytest.fixture(scope="module")
def breakout_runs(tmp_path_factory) -> dict:
  """Trains one toy run per Atari path only when a test first asks for it."""
  roots = {}

  def get(path: str):
    if path not in roots:
      gin_file, bindings = RUNS[path]
      root = tmp_path_factory.mktemp(path) / "run"
      result = train_here(root, gin_file, TOY + bindings, toy=False)
      assert result.returncode == 0, result.stderr[-3000:]
      (root.parent / "stderr.txt").write_text(result.stderr)
      roots[path] = root
    return roots[path]

  return get


def _check_screen(reader, frames: int) -> None:
  assert reader.count_frames() == frames
  assert reader.get_meta_data()["size"] == ALE_SCREEN[::-1]  # width x height
  assert reader.get_meta_data()["fps"] == 15  # one frame per agent step of a 60 Hz game
  frame = reader.get_data(min(20, frames - 1))
  assert frame.shape == (*ALE_SCREEN, 3) and (frame.std(axis=(0, 1)) > 0).any()  # coloured, not blank


def _video(root, path, *flags) -> dict:
  result = run_module(
    "pipelines.evaluate", f"--root_dir={root}", f"--video={path}", "--num_episodes=1", *flags
  )
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["lengths"][0] + 1 == summary["frames"]  # reset frame + one a step
  _check_screen(imageio.get_reader(path), summary["frames"])
  return summary


@pytest.mark.parametrize("path", sorted(RUNS))
def test_atari_video_shows_the_game_screen(breakout_runs, tmp_path, path):
  root = breakout_runs(path)
  assert ("atari_vector_env" in (root / "operative_config.gin").read_text()) == (path == "vector")
  summary = _video(root, tmp_path / f"{path}.mp4")
  assert 0 < summary["lengths"][0] <= EVAL_CAP // 4


def test_gin_bindings_change_the_evaluation(breakout_runs, tmp_path):
  """A tighter frame cap, bound on the command line, ends the game at 200 frames (up to 30
  of them no-op starts) where the run's own cap is 1,000 frames (Breakout's 5 lives last
  longer). The binding names the scope the run's operative_config.gin records."""
  summary = _video(
    breakout_runs("wrapper"),
    tmp_path / "capped.mp4",
    "--gin_bindings=eval/eval/AtariProtocol.max_episode_frames = 200",
  )
  assert (200 - 30) // 4 <= summary["lengths"][0] <= 200 // 4


def test_evaluation_videos_during_training(breakout_runs):
  """`EvalVideos.interval = 100` on a 200-step run evaluated once (at its end): one video of
  that evaluation's step, not two (the final evaluation is the same one)."""
  root = breakout_runs("vector")
  steps = json.loads((root / "metrics.jsonl").read_text().splitlines()[0])["env_steps"]
  assert sorted(p.name for p in (root / "videos").iterdir()) == [f"{steps}.mp4"]
  stderr = (root.parent / "stderr.txt").read_text()
  (frames,) = re.findall(rf"^video: .*/videos/{steps}\.mp4 \((\d+) frames, return ", stderr, re.MULTILINE)
  _check_screen(imageio.get_reader(root / "videos" / f"{steps}.mp4"), int(frames))


@pytest.mark.parametrize("quiet", [True, False])
def test_ale_prints_no_banner_once_libraries_are_quiet(quiet):
  """Each ALE game prints "A.L.E: ..." and "[Powered by Stella]" from C++ unless told not to
  (without `quiet_libraries` it does: the check below can see the banner)."""
  code = (
    ("from pipelines import cli; cli.quiet_libraries(); " if quiet else "")
    + "import gymnasium as gym, ale_py; gym.register_envs(ale_py);"
    + " gym.make('ALE/Breakout-v5').reset(seed=0); print('made')"
  )
  env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
  assert result.returncode == 0 and "made" in result.stdout, result.stderr[-2000:]
  output = result.stdout + result.stderr
  assert ("A.L.E" in output and "Stella" in output) == (not quiet), output


class _NoRender(gym.Wrapper):
  def render(self):
    raise gym.error.Error("Invalid render mode `None`")


@pytest.mark.parametrize("wrap", [lambda env: env, _NoRender])
def test_an_env_that_renders_nothing_is_one_error_naming_it(wrap):
  """No frames (CartPole made with render_mode=None returns None; ALE raises): a PipelineError
  that names the environment, not a traceback."""
  env = environments.VectorEnvironment(
    gym.vector.SyncVectorEnv(
      [lambda: wrap(gym.make("CartPole-v1", render_mode=None))],
      autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    ),
    name="CartPole-v1",  # as make_environment names it
  )
  env.reset()
  with pytest.raises(PipelineError, match="^CartPole-v1 .*render"):
    video._frame(env)
