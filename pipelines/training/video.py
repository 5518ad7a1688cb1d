"""Episode videos: play a policy on one copy of a run's evaluation environment, save MP4 or GIF.

    pipelines-evaluate --root_dir=runs/dqn --video=runs/dqn/episodes.mp4 --num_episodes=3
    pipelines-evaluate --root_dir=runs/dqn --video=random.gif --policy=random

Frames come from the environment's own `rgb_array` rendering (`gymnasium_env.render_mode`),
one after each reset and one after each step, so an episode of length L gives L + 1
frames. The episode number and its return so far are drawn on every frame.

Atari runs: the frames are the game's RGB screen (210x160x3), not the 84x84 grey stacks the
agent sees, one per agent step (the last of its 4 emulator frames, the one ALE's
`render()` returns), played at 15 frames per second, i.e. in real time (60 Hz / 4). On
the wrapper path (`atari_env`) the screen is read from the very game the policy plays
(`ale.getScreenRGB()`, what `render()` returns in `rgb_array` mode; runs build their games
with no render mode). ale-py's vector env (`atari_vector_env`) exposes neither `render()`
nor its emulators' screens, so for a video the episode is played on one wrapper-path game
built with the vector env's own protocol arguments (`atari.renderable_copy`: sticky actions,
no-op starts, life-loss terminals, reward clipping, frame skip and max-pooling as the run's
gin bound them); the policy plays that copy, so the video shows the episode it scores.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import gin
import numpy as np

from pipelines.errors import PipelineError

FORMATS = (".mp4", ".gif")
# pygame (classic-control rendering) opens the sound card on init: no card, ALSA noise.
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


@dataclasses.dataclass
class Recording:
  returns: list[float]
  lengths: list[int]
  frames: int  # written, one after each reset and one after each step
  size: tuple[int, int]  # width, height of a frame


def check_output(path: Path) -> None:
  """Refuses an unknown format or an unwritable place before any episode is played."""
  if path.suffix.lower() not in FORMATS:
    raise PipelineError(f"--video {path}: the name must end in {' or '.join(FORMATS)}")
  if path.is_dir():
    raise PipelineError(f"--video {path} is a folder")
  parent = path.parent
  if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
    raise PipelineError(f"--video {path}: cannot write to {parent} (not a writable folder)")


ATARI_FPS = 60 / 4  # one frame per agent step (frame skip 4) of a 60 Hz game: real time


def playable(py_env, seed: int):
  """`py_env` itself if its frames can be recorded, else a copy that can (ale-py's vector env).

  The copy is one game on the wrapper path with the same protocol; `py_env` is then closed.
  """
  vector_env = getattr(py_env, "gym", None)
  if getattr(vector_env, "protocol", None) is None:  # not built by atari.atari_vector_env
    return py_env
  import gymnasium as gym

  from pipelines.envs import atari, environments

  copy = gym.vector.SyncVectorEnv(
    [lambda: atari.renderable_copy(vector_env)], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP
  )
  py_env.close()
  return environments.VectorEnvironment(copy, seed=seed, name=py_env.name)


def _atari_game(py_env):
  """The ALE interface of a one-copy wrapper-path Atari environment, else None."""
  copies = getattr(getattr(py_env, "gym", None), "envs", None)  # SyncVectorEnv's games
  return getattr(copies[0].unwrapped, "ale", None) if copies else None


def fps(py_env) -> float:
  """The environment's own frame rate for its `render()` frames, or real time for Atari."""
  if _atari_game(py_env) is not None:
    return ATARI_FPS
  return getattr(py_env, "gym", py_env).metadata.get("render_fps") or 30


def _frame(env) -> np.ndarray:
  ale = _atari_game(env)
  if ale is not None:
    return ale.getScreenRGB()
  import gymnasium as gym

  name = getattr(env, "name", type(env).__name__)
  try:
    frame = env.render()
  except (gym.error.Error, NotImplementedError) as e:  # e.g. an env made with render_mode=None
    raise PipelineError(f"{name} cannot render rgb_array frames: {e}") from None
  frame = None if frame is None else np.asarray(frame)
  if frame is None or frame.dtype == object or frame.ndim < 3:  # a copy with no render mode: None
    raise PipelineError(
      f"{name} renders no frames: its render_mode must be 'rgb_array'"
      " (e.g. --gin_bindings=\"gymnasium_env.render_mode = 'rgb_array'\" for a gymnasium_env run)"
    )
  return frame[0] if frame.ndim == 4 else frame  # a vector environment stacks its copies


def annotate(frame: np.ndarray, text: str) -> np.ndarray:
  """Draws `text` top left, white on a black outline so it reads on any background."""
  import cv2

  frame = np.ascontiguousarray(frame[..., :3], dtype=np.uint8).copy()
  scale = max(0.3, frame.shape[1] / 900)
  origin = (4, int(8 + 22 * scale))
  thickness = max(1, round(scale * 2))
  for color, extra in (((0, 0, 0), 2), ((255, 255, 255), 0)):
    cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness + extra, cv2.LINE_AA)
  return frame


def record(py_env, tf_env, policy, sink: Writer, num_episodes: int, epsilon: float = 0.0, seed: int = 0):
  """Plays whole episodes one at a time into `sink`; `epsilon` as in the run's own evaluation.

  Frames go to the file as they come: a long Atari game is thousands of RGB screens.
  """
  from tf_agents.policies import random_tf_policy

  rng = np.random.default_rng(seed)
  explore = random_tf_policy.RandomTFPolicy(tf_env.time_step_spec(), tf_env.action_spec())
  returns, lengths = [], []
  time_step, state = tf_env.reset(), policy.get_initial_state(1)
  episode_return, length = 0.0, 0
  label = lambda: f"episode {len(returns) + 1}/{num_episodes}  return {episode_return:g}"
  sink.append(annotate(_frame(py_env), label()))
  while len(returns) < num_episodes:
    step = policy.action(time_step, state)
    action, state = step.action, step.state
    if epsilon > 0 and rng.random() < epsilon:
      action = explore.action(time_step).action
    time_step = tf_env.step(action)
    episode_return += float(time_step.reward.numpy()[0])
    length += 1
    sink.append(annotate(_frame(py_env), label()))
    if bool(time_step.is_last().numpy()[0]):
      returns.append(episode_return)
      lengths.append(length)
      if len(returns) < num_episodes:
        time_step, state = tf_env.reset(), policy.get_initial_state(1)
        episode_return, length = 0.0, 0
        sink.append(annotate(_frame(py_env), label()))
  return Recording(returns, lengths, sink.frames, sink.size)


def _even(frame: np.ndarray) -> np.ndarray:
  """H.264 in yuv420p needs even sides: pad one black row/column where odd."""
  h, w = frame.shape[:2]
  return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))


class Writer:
  """An MP4 (H.264 through imageio-ffmpeg) or GIF written frame by frame; readers never see
  half a file: it is written under a hidden name and renamed when complete."""

  def __init__(self, path: Path, fps: float):
    self.path, self.fps = path, fps
    self.partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    self.frames = 0
    self.size: tuple[int, int] = (0, 0)

  def __enter__(self) -> Writer:
    import imageio.v2 as imageio

    if self.path.suffix.lower() == ".gif":  # duration: ms per frame
      self._writer = imageio.get_writer(self.partial, mode="I", duration=1000.0 / self.fps, loop=0)
      self._prepare = lambda frame: frame
    else:
      self._writer = imageio.get_writer(
        self.partial, fps=self.fps, codec="libx264", macro_block_size=1, quality=7
      )
      self._prepare = _even
    return self

  def append(self, frame: np.ndarray) -> None:
    self._writer.append_data(self._prepare(frame))
    self.frames += 1
    self.size = (frame.shape[1], frame.shape[0])

  def __exit__(self, error_type, error, traceback) -> None:
    try:
      self._writer.close()
    finally:
      if error_type is None:
        os.replace(self.partial, self.path)
      else:
        self.partial.unlink(missing_ok=True)


@gin.configurable(denylist=["folder", "epsilon", "seed"])
class EvalVideos:
  """Videos of the evaluated policy during training, off by default:

      pipelines-train --gin_file=gin/dqn_breakout_dopamine.gin --root_dir=runs/breakout \\
        --gin_bindings="EvalVideos.interval = 1_000_000"

  writes `<run>/videos/<env_steps>.mp4` at the first evaluation of the run, at the first
  evaluation at or after each further multiple of `interval` env steps, and at the final
  evaluation: `num_episodes` episodes of the policy just evaluated (with the evaluator's
  epsilon), played on one more copy of the evaluation environment, built on first use the
  way `pipelines-evaluate --video` builds it (the game's RGB screen on Atari). These are
  evaluation settings: changing them on an existing run continues it.

  interval: env steps between videos; 0: no videos. suffix: ".mp4" or ".gif".
  """

  def __init__(
    self,
    folder: Path,
    epsilon: float,
    seed: int,
    interval: int = 0,
    num_episodes: int = 1,
    suffix: str = ".mp4",
  ):
    if interval < 0 or num_episodes < 1 or suffix not in FORMATS:
      raise PipelineError(
        f"EvalVideos: interval must be >= 0, num_episodes >= 1 and suffix one of {FORMATS}"
        f" (got {interval}, {num_episodes}, {suffix!r})"
      )
    self.folder, self.epsilon, self.seed = folder, epsilon, seed
    self.interval, self.num_episodes, self.suffix = interval, num_episodes, suffix
    self._py_env = self._tf_env = None

  def _recorded(self) -> list[int]:
    if not self.folder.is_dir():
      return []
    return sorted(int(p.stem) for p in self.folder.glob(f"*{self.suffix}") if p.stem.isdigit())

  def due(self, env_steps: int, final: bool = False) -> bool:
    if not self.interval:
      return False
    recorded = self._recorded()
    if env_steps in recorded:  # e.g. a resumed run's final evaluation
      return False
    last = recorded[-1] if recorded else -1
    return final or env_steps // self.interval > last // self.interval

  def path(self, env_steps: int) -> Path:
    return self.folder / f"{env_steps}{self.suffix}"

  def record(self, env_steps: int, policy) -> Recording:
    if self._tf_env is None:
      from tf_agents.environments import tf_py_environment

      from pipelines.envs import environments

      with gin.config_scope("eval"):  # where the run's evaluation copies are configured
        py_env = environments.make_environment(seed=self.seed, num_envs=1, parallel=False)
      self._py_env = playable(py_env, seed=self.seed)
      self._tf_env = tf_py_environment.TFPyEnvironment(self._py_env)
    self.folder.mkdir(exist_ok=True)
    with Writer(self.path(env_steps), fps(self._py_env)) as sink:
      return record(
        self._py_env, self._tf_env, policy, sink, self.num_episodes, self.epsilon, seed=self.seed + env_steps
      )

  def close(self) -> None:
    if self._py_env is not None:
      self._py_env.close()
