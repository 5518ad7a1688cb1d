"""Atari 2600 games through gymnasium + ale-py, preprocessed as in DQN (Mnih et al. 2015).

    pipelines-train --gin_file=gin/dqn_breakout_nature.gin --root_dir=runs/breakout

Two interchangeable ways to get the same observations, chosen by one binding:

* `atari_env` (default, `make_environment.env_fn = @atari_env`): one gymnasium env with
  gymnasium's own `AtariPreprocessing` (no-op starts, frame skip 4 with a max over the last
  two frames, 84x84 grayscale) and `FrameStackObservation` (4 frames, zeros before the
  first frame). Copies are batched by `make_environment`.
* `atari_vector_env` (fast path, `make_environment.vector_env_fn = @atari_vector_env`):
  ale-py's `AtariVectorEnv`, which does the same preprocessing and stacking in C++ threads.

Both emit uint8 stacks of shape (4, 84, 84), oldest frame first (`q_network` transposes
them to channels-last inside the network); with no-op starts and sticky actions off, the
two paths emit pixel-equal observations for the same actions (tests/experiments/test_atari_protocols.py).
Each protocol's choices are the fields of one `AtariProtocol`, bound once in its gin file
for both paths (`AtariProtocol.sticky_action_probability = 0.25`): a life loss may end the
agent's episode (Nature's "terminal on life loss", `episodic_life`) without resetting the
game, and may then start the new life's stack from zeros (`zero_stack_on_life_loss`, as
DeepMind's `TransitionTable:concatFrames` does); rewards may be clipped to their sign
(`clip_rewards`); each game may start with up to `noop_max` no-op frames. Neither Nature nor
Dopamine presses FIRE at a reset; `fire_on_reset` can, for games that wait for it.
Whatever the agent sees, the environment also reports each finished game's unclipped score
over all lives as `info["episode"]["r"]` (the gymnasium `RecordEpisodeStatistics`
convention), which `VectorEnvironment` collects as the training-game return users plot.

Step counts: an agent step is FRAME_SKIP = 4 emulator frames. After a life loss the agent's
action is not played: the game goes on with one NOOP agent step (4 frames) whose observation
starts the new life's episode, since TF-Agents begins every episode with a FIRST step that
takes no action. Those frames, and the no-op starts, are emulator frames that no agent step
counts (DeepMind's `alewrap` `GameEnvironment:nextRandomGame` likewise plays no-op frames
after every life loss that no agent step counts).
"""

from __future__ import annotations

import dataclasses
import re

import ale_py
import gin
import gymnasium as gym
import numpy as np

from pipelines.errors import PipelineError

gym.register_envs(ale_py)

FRAME_SKIP = 4  # frames per agent step, in every Nature / Dopamine protocol
STACK = 4  # frames per observation
NOOP = 0  # ALE's minimal action sets start with NOOP (gymnasium's AtariPreprocessing assumes it too)


def _has_fire(env: gym.Env) -> bool:
  return "FIRE" in env.unwrapped.get_action_meanings()


class FireOnReset(gym.Wrapper):
  """Presses FIRE for one agent step (4 frames) after each game reset and its no-op starts.

  gymnasium ships no such wrapper. ale-py's `use_fire_reset` instead presses FIRE for one
  frame before the no-ops, so the two paths differ while this is on; no protocol here uses it.
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
  its next `reset()` restarts the whole game. Here `reset()` after a life loss plays one
  NOOP step and returns its observation: the agent's action at a LAST step is never played
  (TF-Agents starts the next episode with a FIRST step), and ale-py's vector env, which
  steps every copy at once, does the same (`_AtariEpisodes`). If the game ends during that
  step, a new game starts and the finished game's `info["episode"]` is passed on.
  Below `FrameStackObservation`, each life's stack starts from zeros; above it, the stack
  carries the frames of the lost life.
  """

  def __init__(self, env: gym.Env):
    super().__init__(env)
    self._game_over = True

  def step(self, action):
    lives = self.env.unwrapped.ale.lives()
    observation, reward, terminated, truncated, info = self.env.step(action)
    self._game_over = terminated or truncated
    life_lost = 0 < self.env.unwrapped.ale.lives() < lives  # ale-py's own test (preprocessed_env.cpp)
    return observation, reward, terminated or life_lost, truncated, info

  def reset(self, **kwargs):
    if not self._game_over:
      observation, _, terminated, truncated, info = self.env.step(NOOP)
      if not (terminated or truncated):
        return observation, info
      game = {k: v for k, v in info.items() if k == "episode"}
      observation, info = self.env.reset(**kwargs)
      self._game_over = False
      return observation, {**info, **game}
    observation, info = self.env.reset(**kwargs)
    self._game_over = False
    return observation, info


def _sign(reward):
  return np.sign(reward)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class AtariProtocol:
  """What an Atari experiment decides about the game, the same on both paths.

      AtariProtocol.sticky_action_probability = 0.25   # in the experiment's gin file
      eval/AtariProtocol.episodic_life = False          # evaluation plays whole games

  game: ALE's name, e.g. 'Breakout', 'SpaceInvaders'.
  episodic_life: a life loss ends the agent's episode (not the game).
  zero_stack_on_life_loss: with episodic_life, the first observation of a new life is
    [0, 0, 0, f], then [0, 0, f, f'], ... (DeepMind's TransitionTable:concatFrames zeroes
    the frames before a stored terminal); False keeps the lost life's frames in the stack.
  clip_rewards: to their sign.
  sticky_action_probability: ALE's repeat_action_probability (Machado et al. 2018: 0.25).
  max_episode_frames: game cap in frames (ALE counts them; 108_000 = 30 min at 60 Hz).
  noop_max: up to this many no-op frames at the start of each game (0: none).
  fire_on_reset: press FIRE after each game reset, for games that wait for it.
  """

  game: str = "Breakout"
  episodic_life: bool = True
  zero_stack_on_life_loss: bool = True
  clip_rewards: bool = True
  sticky_action_probability: float = 0.0
  max_episode_frames: int = 108_000
  noop_max: int = 30
  fire_on_reset: bool = False


def _protocol(protocol: AtariProtocol | None, env_fn: str, retired: dict) -> AtariProtocol:
  """The protocol to build with: the given one, else the gin-bound one of the current scope."""
  if retired:  # a gin file written before the protocol was bound once
    name = next(iter(retired))
    moved = name in {f.name for f in dataclasses.fields(AtariProtocol)}
    hint = f"; bind AtariProtocol.{name} instead (once, for both paths)" if moved else ""
    raise PipelineError(f"{env_fn} has no parameter {name}{hint}")
  return protocol if protocol is not None else AtariProtocol()


@gin.configurable
def atari_env(protocol: AtariProtocol | None = None, render_mode: str | None = None, **retired) -> gym.Env:
  """One preprocessed Atari game: 'ALE/<game>-v5' at frameskip 1, then gymnasium wrappers.

  protocol: None: `AtariProtocol()` with the gin bindings in force (the usual way).
  render_mode: gymnasium's, e.g. 'rgb_array' for videos.
  """
  protocol = _protocol(protocol, "atari_env", retired)
  episodic_life, zero_stack_on_life_loss = protocol.episodic_life, protocol.zero_stack_on_life_loss
  env = gym.make(
    f"ALE/{protocol.game}-v5",
    frameskip=1,  # AtariPreprocessing skips frames and max-pools the last two
    repeat_action_probability=protocol.sticky_action_probability,
    full_action_space=False,
    max_num_frames_per_episode=protocol.max_episode_frames,
    render_mode=render_mode,
  )
  env = gym.wrappers.AtariPreprocessing(
    env, noop_max=protocol.noop_max, frame_skip=FRAME_SKIP, screen_size=84, grayscale_obs=True
  )
  env = gym.wrappers.RecordEpisodeStatistics(env)  # full game, unclipped, all lives
  if protocol.fire_on_reset and _has_fire(env):
    env = FireOnReset(env)
  if episodic_life and zero_stack_on_life_loss:
    env = EpisodicLife(env)  # each life's reset pads the stack below with zeros
  # Zero padding: what ale-py's AtariVectorEnv emits at a game start, so replay and tests
  # see one convention on both paths.
  env = gym.wrappers.FrameStackObservation(env, STACK, padding_type="zero")
  if episodic_life and not zero_stack_on_life_loss:
    env = EpisodicLife(env)
  if protocol.clip_rewards:
    env = gym.wrappers.TransformReward(env, _sign)
  return env


def _snake_case(game: str) -> str:
  return re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()  # 'SpaceInvaders' -> 'space_invaders'


class _AtariEpisodes(gym.vector.VectorWrapper):
  """Life-loss episodes, game scores and clipped rewards on ale-py's `AtariVectorEnv`.

  With `life_loss_info=True`, ale-py ends an episode at a life loss (`terminated`) but does
  not reset the game on the next call, which breaks the NEXT_STEP autoreset contract that
  `VectorEnvironment` relies on (the call after an end starts a new episode, ignoring its
  action). This wrapper restores it, as `EpisodicLife` does on the wrapper path: the call
  after a life loss plays NOOP for that copy, whose reward counts in the game's score but
  not for the agent; if the game ends during it, the copy is reset at once (ale-py's
  `reset_mask`). A game is over when ale-py would reset it: a terminal that is not a life
  loss (its `was_life_lost_` test: fewer lives, and some left) or a truncation.
  Finished games' unclipped scores are reported as `info["episode"]["r"]`.
  """

  def __init__(self, env, clip_rewards: bool, zero_stack_on_life_loss: bool):
    super().__init__(env)
    self._clip = clip_rewards
    self._zero_stack = zero_stack_on_life_loss
    n = env.num_envs
    self._score = np.zeros(n, np.float64)
    self._length = np.zeros(n, np.int64)
    self._lives = np.zeros(n, np.int64)
    self._frame = np.zeros(n, np.int64)  # ALE's episode frame number after the last call
    self._after_life_loss = np.zeros(n, bool)
    self._ended = np.zeros(n, bool)  # the last call ended the copy's episode
    self._age = np.zeros(n, np.int64)  # agent steps since the episode's first observation

  def reset(self, *, seed=None, options=None):
    if isinstance(seed, list):  # one seed per copy: ale-py takes them as an array only
      seed = np.asarray(seed, np.int64)
    observation, info = self.env.reset(seed=seed, options=options)
    self._score[:] = 0
    self._length[:] = 0
    self._lives[:] = info["lives"]
    self._frame[:] = info["episode_frame_number"]
    self._after_life_loss[:] = False
    self._ended[:] = False
    self._age[:] = 0  # ale-py clears the stack at a reset
    return observation, info

  def step(self, actions):
    noop = self._after_life_loss
    first = self._ended  # copies whose episode ended last call: this call starts a new one
    observation, reward, terminated, truncated, info = self.env.step(np.where(noop, NOOP, actions))
    lives = np.asarray(info["lives"], np.int64)
    frame = np.asarray(info["episode_frame_number"], np.int64)
    # A life lost at the frame cap: ale-py resets the game instead of playing the NOOP.
    reset_by_ale = noop & (frame < self._frame)
    self._score += reward
    self._length += 1
    life_lost = terminated & (lives < self._lives) & (lives > 0)
    game_over = (terminated & ~life_lost) | truncated
    over = game_over | reset_by_ale
    if over.any():
      info = dict(info)
      info["episode"] = {"r": self._score.copy(), "l": self._length.copy()}
      info["_episode"] = over
      self._score[over] = 0
      self._length[over] = 0
    restart = noop & game_over  # the game ended during the NOOP step: start the next one now
    if restart.any():
      fresh, fresh_info = self.env.reset(options={"reset_mask": restart})
      observation = np.where(restart[:, None, None, None], fresh, observation)
      lives = np.where(restart, fresh_info["lives"], lives)
      frame = np.where(restart, fresh_info["episode_frame_number"], frame)
    # The NOOP step begins the new life's episode: none of it is the agent's.
    reward = np.where(noop, 0.0, reward)
    terminated = terminated & ~noop
    truncated = truncated & ~noop
    self._age = np.where(first, 0, self._age + 1)
    if self._zero_stack:
      observation = self._zero_older_frames(observation)
    self._after_life_loss = life_lost & ~noop
    self._ended = terminated | truncated
    self._lives[:] = lives
    self._frame[:] = frame
    if self._clip:
      reward = np.sign(reward)
    return observation, reward, terminated, truncated, info

  def _zero_older_frames(self, observation: np.ndarray) -> np.ndarray:
    """Zeroes the frames of a stack that come before its episode's first observation."""
    young = np.flatnonzero(self._age < STACK - 1)
    if young.size == 0:
      return observation
    observation = np.array(observation)  # never write into ale-py's buffer
    for row in young:
      observation[row, : STACK - 1 - self._age[row]] = 0
    return observation


@gin.configurable
def atari_vector_env(
  num_envs: int, protocol: AtariProtocol | None = None, num_threads: int = 0, **retired
) -> gym.vector.VectorEnv:
  """`num_envs` games in ale-py's `AtariVectorEnv` (C++ threads), same observations as `atari_env`.

  protocol: None: `AtariProtocol()` with the gin bindings in force (the usual way).
  num_threads: C++ worker threads (0: one per copy, capped by the machine's cores).
  ale-py draws 0 to noop_max - 1 no-op frames where gymnasium's AtariPreprocessing draws 1
  to noop_max, and counts max_episode_frames from the end of the no-op starts where ALE
  counts them from the reset.
  """
  protocol = _protocol(protocol, "atari_vector_env", retired)
  episodic_life = protocol.episodic_life
  env = ale_py.vector_env.AtariVectorEnv(
    _snake_case(protocol.game),
    num_envs,
    num_threads=num_threads,
    max_num_frames_per_episode=protocol.max_episode_frames,
    repeat_action_probability=protocol.sticky_action_probability,
    full_action_space=False,
    autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    img_height=84,
    img_width=84,
    grayscale=True,
    stack_num=STACK,
    frameskip=FRAME_SKIP,
    maxpool=True,
    noop_max=protocol.noop_max,
    # `episodic_life=True` would restart the whole game at each life loss; life_loss_info
    # ends the episode there and lets the game go on (checked in tests/envs/test_atari.py).
    episodic_life=False,
    life_loss_info=episodic_life,
    reward_clipping=False,  # clipped after the score is counted, by _AtariEpisodes
    use_fire_reset=protocol.fire_on_reset,
  )
  episodes = _AtariEpisodes(env, protocol.clip_rewards, protocol.zero_stack_on_life_loss)
  episodes.protocol = protocol  # for `renderable_copy`: one copy on the wrapper path
  return episodes


def renderable_copy(vector_env: gym.vector.VectorEnv) -> gym.Env:
  """One `atari_env` game with the protocol of an `atari_vector_env`, for `pipelines-evaluate --video`.

  ale-py's `AtariVectorEnv` keeps its emulators in C++ and exposes no `render()` nor their
  screens, so a video of a fast-path run is played on the wrapper path instead, with the
  vector env's own `AtariProtocol` (sticky actions, no-op starts, life-loss
  terminals and zeroed stacks, reward clipping, FIRE, frame cap; frame skip 4 with a max
  over the last two frames and 84x84 grey 4-stacks on both paths). The observations the
  policy sees are pixel-equal for the same actions (tests/experiments/test_atari_protocols.py); the only
  differences are the two paths' documented ones: the no-op start draws (1 to noop_max here,
  0 to noop_max - 1 in ale-py) and where the frame cap starts counting.
  """
  protocol = getattr(vector_env, "protocol", None)
  if protocol is None:
    raise TypeError(f"{type(vector_env).__name__} was not built by atari_vector_env")
  return atari_env(protocol=protocol)
