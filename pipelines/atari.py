"""Atari 2600 games through gymnasium + ale-py, preprocessed as in DQN (Mnih et al. 2015).

    pipelines-train --gin_file=gin/dqn_breakout_nature.gin --root_dir=runs/breakout

Two interchangeable ways to get the same observations, chosen by one binding:

* `atari_env` (default, `make_environment.env_fn = @atari_env`): one gymnasium env with
  gymnasium's own `AtariPreprocessing` (up to 30 no-op starts, frame skip 4 with a max over
  the last two frames, 84x84 grayscale) and `FrameStackObservation` (4 frames, zeros before
  the first frame). Copies are batched by `make_environment`.
* `atari_vector_env` (fast path, `make_environment.vector_env_fn = @atari_vector_env`):
  ale-py's `AtariVectorEnv`, which does the same preprocessing and stacking in C++ threads.

Both emit uint8 stacks of shape (4, 84, 84), oldest frame first (`q_network` transposes
them to channels-last inside the network). For training (the defaults) a life loss ends
the episode (Nature's "terminal on life loss", `episodic_life`) without resetting the game,
and rewards are clipped to their sign (`clip_rewards`); evaluation turns both off. Whatever
the agent sees, the environment also reports each finished game's unclipped score over all
lives as `info["episode"]["r"]` (the gymnasium `RecordEpisodeStatistics` convention), which
`VectorEnvironment` collects as the training-game return users plot.
"""

from __future__ import annotations

import re

import ale_py
import gin
import gymnasium as gym
import numpy as np

gym.register_envs(ale_py)

FRAME_SKIP = 4  # frames per agent step, in every Nature / Dopamine protocol
STACK = 4  # frames per observation


def _has_fire(env: gym.Env) -> bool:
  return "FIRE" in env.unwrapped.get_action_meanings()


class FireOnReset(gym.Wrapper):
  """Presses FIRE after each game reset, for games that wait for it (Breakout's ball).

  gymnasium ships no such wrapper; this matches ale-py's `use_fire_reset` in its vector env.
  """

  def __init__(self, env: gym.Env):
    super().__init__(env)
    self._fire = env.unwrapped.get_action_meanings().index("FIRE")

  def reset(self, **kwargs):
    observation, info = self.env.reset(**kwargs)
    observation, _, terminated, truncated, info = self.env.step(self._fire)
    if terminated or truncated:  # never in practice; keep the contract of reset()
      observation, info = self.env.reset(**kwargs)
    return observation, info


class EpisodicLife(gym.Wrapper):
  """Ends the agent's episode at a life loss; the game itself goes on (Nature DQN).

  gymnasium's `AtariPreprocessing(terminal_on_life_loss=True)` also ends the episode, but
  its next `reset()` restarts the whole game. Here `reset()` after a life loss returns the
  current observation without touching the game, like ale-py's `life_loss_info=True`.
  """

  def __init__(self, env: gym.Env):
    super().__init__(env)
    self._lives = 0
    self._game_over = True
    self._last = None

  def step(self, action):
    observation, reward, terminated, truncated, info = self.env.step(action)
    self._game_over = terminated or truncated
    lives = self.env.unwrapped.ale.lives()
    life_lost = 0 < lives < self._lives
    self._lives = lives
    self._last = (observation, info)
    return observation, reward, terminated or life_lost, truncated, info

  def reset(self, **kwargs):
    if self._game_over:
      observation, info = self.env.reset(**kwargs)
      self._lives = self.env.unwrapped.ale.lives()
      self._game_over = False
      return observation, info
    observation, info = self._last
    return observation, {k: v for k, v in info.items() if k != "episode"}


def _sign(reward):
  return np.sign(reward)


@gin.configurable
def atari_env(
  game: str = "Breakout",
  episodic_life: bool = True,
  clip_rewards: bool = True,
  sticky_action_probability: float = 0.0,
  max_episode_frames: int = 108_000,
  noop_max: int = 30,
  render_mode: str | None = None,
) -> gym.Env:
  """One preprocessed Atari game: 'ALE/<game>-v5' at frameskip 1, then gymnasium wrappers.

  episodic_life: a life loss ends the episode (not the game). clip_rewards: to their sign.
  sticky_action_probability: ALE's repeat_action_probability (Machado et al. 2018: 0.25).
  max_episode_frames: game cap in frames (ALE counts them; 108_000 = 30 min at 60 Hz).
  noop_max: up to this many no-op actions (frames) at the start of each game.
  """
  env = gym.make(
    f"ALE/{game}-v5",
    frameskip=1,  # AtariPreprocessing skips frames and max-pools the last two
    repeat_action_probability=sticky_action_probability,
    full_action_space=False,
    max_num_frames_per_episode=max_episode_frames,
    render_mode=render_mode,
  )
  env = gym.wrappers.AtariPreprocessing(
    env, noop_max=noop_max, frame_skip=FRAME_SKIP, screen_size=84, grayscale_obs=True
  )
  env = gym.wrappers.RecordEpisodeStatistics(env)  # full game, unclipped, all lives
  if _has_fire(env):
    env = FireOnReset(env)
  # Zero padding: what ale-py's AtariVectorEnv emits at a game start, so replay and tests
  # see one convention on both paths.
  env = gym.wrappers.FrameStackObservation(env, STACK, padding_type="zero")
  if episodic_life:
    env = EpisodicLife(env)
  if clip_rewards:
    env = gym.wrappers.TransformReward(env, _sign)
  return env


def _snake_case(game: str) -> str:
  return re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()  # 'SpaceInvaders' -> 'space_invaders'


class _GameScores(gym.vector.VectorWrapper):
  """Reports finished games' unclipped scores as `info["episode"]["r"]` and clips rewards.

  With `life_loss_info=True`, `AtariVectorEnv` ends an episode at every life loss, so a
  game is over only when it terminates with no lives left or is truncated.
  """

  def __init__(self, env, clip_rewards: bool):
    super().__init__(env)
    self._clip = clip_rewards
    self._score = np.zeros(env.num_envs, np.float64)
    self._length = np.zeros(env.num_envs, np.int64)

  def reset(self, **kwargs):
    self._score[:] = 0
    self._length[:] = 0
    return self.env.reset(**kwargs)

  def step(self, actions):
    observation, reward, terminated, truncated, info = self.env.step(actions)
    self._score += reward
    self._length += 1
    over = (terminated & (info["lives"] == 0)) | truncated
    if over.any():
      info = dict(info)
      info["episode"] = {"r": self._score.copy(), "l": self._length.copy()}
      info["_episode"] = over
      self._score[over] = 0
      self._length[over] = 0
    if self._clip:
      reward = np.sign(reward)
    return observation, reward, terminated, truncated, info


@gin.configurable
def atari_vector_env(
  num_envs: int,
  game: str = "Breakout",
  episodic_life: bool = True,
  clip_rewards: bool = True,
  sticky_action_probability: float = 0.0,
  max_episode_frames: int = 108_000,
  noop_max: int = 30,
  num_threads: int = 0,
) -> gym.vector.VectorEnv:
  """`num_envs` games in ale-py's `AtariVectorEnv` (C++ threads), same observations as `atari_env`.

  num_threads: C++ worker threads (0: one per copy, capped by the machine's cores).
  Other arguments as in `atari_env`.
  """
  env = ale_py.vector_env.AtariVectorEnv(
    _snake_case(game),
    num_envs,
    num_threads=num_threads,
    max_num_frames_per_episode=max_episode_frames,
    repeat_action_probability=sticky_action_probability,
    full_action_space=False,
    autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    img_height=84,
    img_width=84,
    grayscale=True,
    stack_num=STACK,
    frameskip=FRAME_SKIP,
    maxpool=True,
    noop_max=noop_max,
    # `episodic_life=True` would restart the whole game at each life loss; life_loss_info
    # ends the episode there and lets the game go on (checked in tests/test_atari.py).
    episodic_life=False,
    life_loss_info=episodic_life,
    reward_clipping=False,  # clipped after the score is counted, by _GameScores
    use_fire_reset=True,
  )
  return _GameScores(env, clip_rewards=clip_rewards)
