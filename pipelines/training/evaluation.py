"""Evaluation: run a policy for a fixed number of whole episodes and summarise the returns.

    python -m pipelines.evaluate --root_dir=runs/x --num_episodes=10 [--policy=random]

Episodes run side by side, one batch row per environment copy, inside one compiled
graph: ten CartPole episodes cost about as much as one. Each copy plays its share of
the episodes and no more (letting copies race would over-sample short episodes).
"""

from __future__ import annotations

import dataclasses
import time

import gin
import numpy as np
import tensorflow as tf
from tf_agents.environments import tf_environment
from tf_agents.policies import random_tf_policy


@dataclasses.dataclass
class EvalResult:
  returns: list[float]
  lengths: list[int]
  seconds: float

  def summary(self) -> dict:
    returns = np.asarray(self.returns, dtype=np.float64)
    return {
      "average_return": float(returns.mean()),
      "return_std": float(returns.std()),
      "min_return": float(returns.min()),
      "max_return": float(returns.max()),
      "average_episode_length": float(np.mean(self.lengths)),
      "num_episodes": len(self.returns),
    }


@gin.configurable(denylist=["seed"])
class Evaluator:
  """Plays `num_episodes` whole episodes with a policy on a batched TF environment.

  num_episodes: episodes per evaluation, shared out over the environment copies.
  epsilon: probability of a uniformly random action (0 = greedy; Nature's Atari eval: 0.05).
  seed: of the epsilon draws; `build_components` passes the experiment's seed.
  Episode caps are the environment's own (e.g. `eval/gymnasium_env.max_episode_steps`).
  """

  def __init__(self, num_episodes: int = 10, epsilon: float = 0.0, seed: int = 0):
    self.num_episodes = num_episodes
    self.epsilon = epsilon
    self.seed = seed
    self._compiled = {}

  def __call__(self, env: tf_environment.TFEnvironment, policy, seed: int | None = None) -> EvalResult:
    """`policy` is a TF policy or a loaded SavedModel policy (anything with `.action`);
    `seed` replaces the evaluator's own for this (env, policy) pair's first call."""
    start = time.perf_counter()
    key = (id(env), id(policy))
    if key not in self._compiled:
      rng = tf.random.Generator.from_seed(self.seed if seed is None else seed)
      self._compiled[key] = tf.function(lambda: self._play(env, policy, rng), autograph=False)
    returns, lengths, mask = (t.numpy() for t in self._compiled[key]())
    return EvalResult(returns[mask].tolist(), lengths[mask].astype(int).tolist(), time.perf_counter() - start)

  def _play(self, env, policy, rng):
    n = env.batch_size or 1
    quota_list = [self.num_episodes // n + (i < self.num_episodes % n) for i in range(n)]
    width = max(quota_list)
    quota = tf.constant(quota_list, tf.int32)
    spec = env.action_spec()
    random_policy = random_tf_policy.RandomTFPolicy(env.time_step_spec(), spec)

    def act(time_step, state):
      step = policy.action(time_step, state)
      if self.epsilon <= 0:
        return step.action, step.state
      explore = rng.uniform([n]) < self.epsilon
      random_action = random_policy.action(time_step).action
      explore = tf.reshape(explore, [n] + [1] * (step.action.shape.rank - 1))
      return tf.where(explore, random_action, step.action), step.state

    def body(time_step, state, done, episode_return, episode_length, returns, lengths):
      action, state = act(time_step, state)
      time_step = env.step(action)
      active = done < quota
      episode_return += tf.where(active, time_step.reward, 0.0)
      episode_length += tf.cast(active & ~time_step.is_first(), tf.int32)  # a reset is no step
      ended = active & time_step.is_last()
      slot = ended[:, None] & (tf.range(width)[None] == done[:, None])  # [copy, episode]
      returns = tf.where(slot, episode_return[:, None], returns)
      lengths = tf.where(slot, episode_length[:, None], lengths)
      done += tf.cast(ended, tf.int32)
      episode_return = tf.where(ended, 0.0, episode_return)
      episode_length = tf.where(ended, 0, episode_length)
      return time_step, state, done, episode_return, episode_length, returns, lengths

    initial = (
      env.reset(),
      policy.get_initial_state(n),
      tf.zeros([n], tf.int32),
      tf.zeros([n], tf.float32),
      tf.zeros([n], tf.int32),
      tf.zeros([n, width], tf.float32),
      tf.zeros([n, width], tf.int32),
    )
    result = tf.while_loop(lambda *loop: tf.reduce_any(loop[2] < quota), body, initial)
    mask = tf.range(width)[None] < quota[:, None]
    return result[5], result[6], mask


def random_policy(env: tf_environment.TFEnvironment) -> random_tf_policy.RandomTFPolicy:
  """The uniform random baseline every result is compared with."""
  return random_tf_policy.RandomTFPolicy(env.time_step_spec(), env.action_spec())
