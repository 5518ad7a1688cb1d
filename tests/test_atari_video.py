"""pipelines-evaluate --video on Atari runs: the game's RGB screen, from either Atari path.

pytest tests/test_atari_video.py

Two toy Breakout runs, each trained once: the Nature gin on the wrapper path (`atari_env`)
and the Dopamine gin on ale-py's vector env (`atari_vector_env`, which cannot render).
"""

from __future__ import annotations

import json

import gymnasium as gym
import imageio.v2 as imageio
import pytest

from pipelines import environments, video
from pipelines.errors import PipelineError

from conftest import run_module, train_here

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
  f"eval/atari_env.max_episode_frames = {EVAL_CAP}",
  f"eval/atari_vector_env.max_episode_frames = {EVAL_CAP}",
  "frame_stack_replay.capacity = 1_000",
]
RUNS = {
  "wrapper": ("gin/dqn_breakout_nature.gin", []),
  "vector": ("gin/dqn_breakout_dopamine.gin", ["make_environment.vector_env_fn = @atari_vector_env"]),
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
      roots[path] = root
    return roots[path]

  return get


def _video(root, path, *flags) -> dict:
  result = run_module(
    "pipelines.evaluate", f"--root_dir={root}", f"--video={path}", "--num_episodes=1", *flags
  )
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  reader = imageio.get_reader(path)
  assert reader.count_frames() == summary["lengths"][0] + 1 == summary["frames"]  # reset frame + one a step
  assert reader.get_meta_data()["size"] == ALE_SCREEN[::-1]  # width x height
  assert reader.get_meta_data()["fps"] == 15  # one frame per agent step of a 60 Hz game
  frame = reader.get_data(len(summary["returns"]) * 20)
  assert frame.shape == (*ALE_SCREEN, 3) and (frame.std(axis=(0, 1)) > 0).any()  # coloured, not blank
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
    "--gin_bindings=eval/eval/atari_env.max_episode_frames = 200",
  )
  assert (200 - 30) // 4 <= summary["lengths"][0] <= 200 // 4


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
