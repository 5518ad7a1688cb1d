"""Gymnasium environments as TF-Agents environments.

    pipelines-train --gin_file=gin/dqn_cartpole.gin \
        --gin_bindings="gymnasium_env.env_id = 'Acrobot-v1'" --root_dir=runs/acrobot

tf-agents 0.19.0 only speaks the old `gym` API, so this module adapts gymnasium (>= 1.0)
itself. The one rule that matters for learning: gymnasium tells a true terminal
(`terminated`) apart from a time-limit end (`truncated`). Both end the episode (step type
LAST), but only a terminal has discount 0; a truncated step keeps discount 1 so that TD
targets still bootstrap from the last observation.

`make_environment` batches copies with gymnasium's vector environments (in-process
`SyncVectorEnv`, or one process per copy with `AsyncVectorEnv`); `VectorEnvironment`
adapts any gymnasium vector environment, ale-py's `AtariVectorEnv` included.
"""

from __future__ import annotations

import collections
import difflib
from collections.abc import Callable
from typing import Any

import gin
import gymnasium as gym
import numpy as np
from tf_agents.environments import py_environment
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts

from pipelines.errors import PipelineError

_FIRST, _MID, _LAST = (np.int32(t) for t in (ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST))


def space_to_spec(space: gym.Space, name: str):
  """Converts a gymnasium space to a (nest of) bounded array spec(s), as TF-Agents' gym
  wrapper (`gym_wrapper.spec_from_gym_space`) does for the same `gym` space.

  Discrete: an int64 scalar in [start, start + n - 1]. Box: its shape and bounds; float64
  becomes float32 (what TF networks consume). MultiDiscrete: int32 in [start, start + nvec - 1]
  (TF-Agents: [0, nvec - 1], gym's MultiDiscrete has no start). MultiBinary: int32 in [0, 1].
  Tuple: a tuple of specs named `<name>/tuple_<i>`; Dict: an OrderedDict in the space's key
  order, named `<name>/<key>`; nested to any depth. A bound that is the same everywhere is
  one scalar (TF-Agents' simplification) for MultiDiscrete.
  """
  if isinstance(space, gym.spaces.Discrete):
    start = int(space.start)
    return array_spec.BoundedArraySpec((), np.int64, start, start + int(space.n) - 1, name=name)
  if isinstance(space, gym.spaces.Box):
    dtype = np.float32 if space.dtype == np.float64 else space.dtype
    return array_spec.BoundedArraySpec(
      space.shape, dtype, space.low.astype(dtype), space.high.astype(dtype), name=name
    )
  if isinstance(space, gym.spaces.MultiDiscrete):
    low = np.asarray(space.start, np.int32)
    high = low + np.asarray(space.nvec, np.int32) - 1
    simple_low, simple_high = _same_everywhere(low), _same_everywhere(high)
    if simple_low.shape == simple_high.shape:  # broadcasting needs both simplified, or neither
      low, high = simple_low, simple_high
    return array_spec.BoundedArraySpec(space.shape, np.int32, low, high, name=name)
  if isinstance(space, gym.spaces.MultiBinary):
    return array_spec.BoundedArraySpec(space.shape, np.int32, 0, 1, name=name)
  if isinstance(space, gym.spaces.Tuple):
    return tuple(space_to_spec(s, f"{name}/tuple_{i}") for i, s in enumerate(space.spaces))
  if isinstance(space, gym.spaces.Dict):
    parts = space.spaces.items()
    return collections.OrderedDict((key, space_to_spec(s, f"{name}/{key}")) for key, s in parts)
  raise PipelineError(
    f"unsupported gymnasium space for {name}: {space!r} "
    "(Box, Discrete, MultiDiscrete, MultiBinary, and Tuple and Dict of them are)"
  )


def _same_everywhere(bound: np.ndarray) -> np.ndarray:
  """One value for a bound that holds it in every position (TF-Agents' `simplify_box_bounds`)."""
  first = bound.flat[0]
  return np.array(first, bound.dtype) if np.all(bound == first) else bound


def action_space_to_spec(space: gym.Space):
  """The action spec: one array, since every agent here acts with one action tensor."""
  spec = space_to_spec(space, "action")
  if not isinstance(spec, array_spec.ArraySpec):
    raise PipelineError(f"nested action spaces are not supported: {space!r}")
  return spec


def to_spec_dtypes(spec, value):
  """`value` (an observation, or a batch of them) in the structure and dtypes of `spec`.

  Dict observations come back as the spec's OrderedDict (gymnasium returns plain dicts),
  Tuples as tuples; each array is cast to its spec's dtype (float64 -> float32, MultiBinary's
  int8 -> int32). The batched observations of gymnasium's vector environments have the same
  structure with a leading batch dimension.
  """
  if isinstance(spec, dict):
    return collections.OrderedDict((key, to_spec_dtypes(s, value[key])) for key, s in spec.items())
  if isinstance(spec, tuple):
    return tuple(to_spec_dtypes(s, v) for s, v in zip(spec, value, strict=True))
  return np.asarray(value, spec.dtype)


def copy_seeds(seed: int, num_envs: int) -> list[int]:
  """Copy i's environment seed: the i-th child of NumPy's `SeedSequence(seed)`.

  Not `seed + i`, gymnasium's convention for an integer seed: with 8 copies, runs of seeds
  0 and 1 would share 7 of their 8 copies' seeds, and "seeds 0-4" would be five views of
  nearly the same environments. Copy i's seed does not depend on the number of copies.
  """
  # 31 bits: ale-py's C++ reset takes seeds as 32-bit signed integers.
  words = (np.random.SeedSequence(seed, spawn_key=(i,)).generate_state(1)[0] for i in range(num_envs))
  return [int(word) & 0x7FFFFFFF for word in words]


def _step_fields(terminated, truncated, discount: np.float32):
  """Step type and discount of a step that may end an episode (works batched too)."""
  ended = np.logical_or(terminated, truncated)
  step_type = np.where(ended, _LAST, _MID).astype(np.int32)
  discount = np.where(terminated, np.float32(0.0), discount).astype(np.float32)
  return step_type, discount


class GymnasiumEnvironment(py_environment.PyEnvironment):
  """One gymnasium environment behind the TF-Agents `PyEnvironment` interface."""

  def __init__(self, env: gym.Env, seed: int | None = None, discount: float = 1.0):
    super().__init__(handle_auto_reset=True)
    self._env = env
    self._seed = None if seed is None else copy_seeds(seed, 1)[0]  # as copy 0 of a batch
    self._discount = np.float32(discount)
    self._observation_spec = space_to_spec(env.observation_space, "observation")
    self._action_spec = action_space_to_spec(env.action_space)
    if seed is not None:
      env.action_space.seed(self._seed)

  @property
  def gym(self) -> gym.Env:
    return self._env

  def observation_spec(self):
    return self._observation_spec

  def action_spec(self):
    return self._action_spec

  def _reset(self) -> ts.TimeStep:
    # Seed only the first reset: later resets continue the seeded generator.
    observation, _ = self._env.reset(seed=self._seed)
    self._seed = None
    observation = to_spec_dtypes(self._observation_spec, observation)
    return ts.TimeStep(_FIRST, np.float32(0.0), self._discount, observation)

  def _step(self, action) -> ts.TimeStep:
    # TimeSteps are built directly: ts.transition() & co. cost ~100 us of type checks.
    action = np.asarray(action, dtype=self._action_spec.dtype)
    observation, reward, terminated, truncated, _ = self._env.step(
      action.item() if action.shape == () else action
    )
    step_type, discount = _step_fields(terminated, truncated, self._discount)
    observation = to_spec_dtypes(self._observation_spec, observation)
    return ts.TimeStep(step_type, np.float32(reward), discount, observation)

  def render(self, mode: str = "rgb_array"):
    return self._env.render()

  def close(self) -> None:
    self._env.close()


class VectorEnvironment(py_environment.PyEnvironment):
  """A gymnasium vector environment (autoreset mode NEXT_STEP) as a batched `PyEnvironment`.

  With NEXT_STEP autoreset, the call after a copy's episode ends resets that copy and
  ignores its action: that step becomes a FIRST step with reward 0, exactly what
  TF-Agents drivers and replay expect after a LAST step. An environment that breaks this
  contract (ale-py's `life_loss_info` ends an episode without a reset, so the next call is
  a real step) would lose that step's reward and any end it reports; such a call raises
  instead. `atari.atari_vector_env` restores the contract for ale-py.
  """

  def __init__(
    self, env: gym.vector.VectorEnv, seed: int | None = None, discount: float = 1.0, name: str = ""
  ):
    super().__init__(handle_auto_reset=False)
    self.name = name or type(env).__name__
    mode = env.metadata.get("autoreset_mode")
    if mode is not None and mode != gym.vector.AutoresetMode.NEXT_STEP:
      raise PipelineError(f"vector environments need autoreset_mode NEXT_STEP, got {mode}")
    self._env = env
    self._seeds = None if seed is None else copy_seeds(seed, env.num_envs)
    self._discount = np.float32(discount)
    self._num_envs = env.num_envs
    self._observation_spec = space_to_spec(env.single_observation_space, "observation")
    self._action_spec = action_space_to_spec(env.single_action_space)
    self._ended = np.zeros(self._num_envs, dtype=bool)
    self._game_returns: list[float] = []
    if seed is not None:
      env.action_space.seed(seed)

  @property
  def gym(self) -> gym.vector.VectorEnv:
    return self._env

  @property
  def batched(self) -> bool:
    return True

  @property
  def batch_size(self) -> int:
    return self._num_envs

  def observation_spec(self):
    return self._observation_spec

  def action_spec(self):
    return self._action_spec

  def _reset(self) -> ts.TimeStep:
    observation, _ = self._env.reset(seed=self._seeds)  # first reset only: then the copies' own RNGs
    self._seeds = None
    self._ended[:] = False
    n = self._num_envs
    return ts.TimeStep(
      np.full(n, _FIRST),
      np.zeros(n, np.float32),
      np.full(n, self._discount),
      to_spec_dtypes(self._observation_spec, observation),
    )

  def _step(self, action) -> ts.TimeStep:
    action = np.asarray(action, dtype=self._action_spec.dtype)
    observation, reward, terminated, truncated, info = self._env.step(action)
    if "_episode" in info:  # gymnasium's RecordEpisodeStatistics convention
      self._game_returns.extend(np.asarray(info["episode"]["r"])[info["_episode"]].tolist())
    restarted = self._ended  # these copies were reset by this call
    broken = restarted & (np.logical_or(terminated, truncated) | (np.asarray(reward) != 0))
    if broken.any():
      raise PipelineError(
        f"{self.name}: copies {np.flatnonzero(broken).tolist()} report a reward or an end on the call"
        " after their episode ended, which must reset them (gymnasium NEXT_STEP autoreset);"
        " an environment that ends episodes without resetting needs a wrapper that restarts them"
      )
    step_type, discount = _step_fields(terminated, truncated, self._discount)
    step_type[restarted] = _FIRST
    self._ended = step_type == _LAST
    return ts.TimeStep(
      step_type,
      np.asarray(reward, np.float32),
      discount,
      to_spec_dtypes(self._observation_spec, observation),
    )

  def pop_game_returns(self) -> list[float]:
    """Scores of the games finished since the last call, as the environment reported them.

    An Atari training episode ends at a life loss with clipped rewards; its wrappers report
    each whole game's unclipped score in `info["episode"]["r"]` (empty for other envs).
    """
    returns, self._game_returns = self._game_returns, []
    return returns

  def render(self, mode: str = "rgb_array"):
    frames = self._env.render()
    return np.stack(frames) if isinstance(frames, (list, tuple)) else frames

  def close(self) -> None:
    self._env.close()


def check_env_id(env_id: str) -> None:
  """Raises a one-line error naming the nearest registered ids for an unknown `env_id`."""
  if env_id in gym.registry:
    return
  nearest = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
  hint = f"; did you mean {', '.join(nearest)}?" if nearest else ""
  raise PipelineError(f"unknown environment id {env_id!r}{hint}")


@gin.configurable
def gymnasium_env(
  env_id: str = gin.REQUIRED,
  max_episode_steps: int | None = None,
  render_mode: str | None = "rgb_array",
  env_kwargs: dict[str, Any] | None = None,
) -> gym.Env:
  """One gymnasium environment by id (e.g. 'CartPole-v1'), with its registered wrappers."""
  check_env_id(env_id)
  return gym.make(env_id, max_episode_steps=max_episode_steps, render_mode=render_mode, **(env_kwargs or {}))


@gin.configurable(denylist=["seed"])
def make_environment(
  env_fn: Callable[[], gym.Env] = gymnasium_env,
  num_envs: int = 1,
  parallel: bool = False,
  seed: int = 0,
  vector_env_fn: Callable[..., gym.vector.VectorEnv] | None = None,
) -> py_environment.PyEnvironment:
  """`num_envs` copies of `env_fn` as one batched environment; copy i gets `copy_seeds(seed)[i]`.

  vector_env_fn: an already vectorised environment, `vector_env_fn(num_envs=...)`, used
    instead of `env_fn` (e.g. `@atari_vector_env`, ale-py's C++ batch).
  parallel: run each copy in its own process (gymnasium `AsyncVectorEnv`), worth it
    when a step costs more than the inter-process round trip (Atari, not CartPole).
  Collection and evaluation bind their own values through the `collect/` and `eval/`
  gin scopes; the seed comes from `build_components.seed`.
  """
  if num_envs < 1:
    raise PipelineError(f"make_environment.num_envs must be >= 1, got {num_envs}")
  if vector_env_fn is not None:
    vector_env = vector_env_fn(num_envs=num_envs)
    return VectorEnvironment(vector_env, seed=seed, name=getattr(vector_env_fn, "__name__", ""))
  scope = gin.current_scope_str()

  def make() -> gym.Env:  # gin scope re-entered: AsyncVectorEnv calls this in a child
    with gin.config_scope(scope):
      return env_fn()

  # Build one copy here first, so a bad id fails in this process with one clear line.
  first = make()
  name = first.spec.id if first.spec is not None else type(first.unwrapped).__name__
  env_fns = [lambda: first] + [make] * (num_envs - 1)
  if parallel:
    first.close()
    vector_env = gym.vector.AsyncVectorEnv(
      [make] * num_envs, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP, context="fork"
    )
  else:
    vector_env = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
  return VectorEnvironment(vector_env, seed=seed, name=name)
