"""Trainers keep the gin file's budgets exactly, whatever the copies and episode lengths.

    .venv/bin/python -m pytest -q tests/training/test_trainers.py

The environment's episodes last 2-3 steps, so with 8 copies most batched steps restart a
copy somewhere: exactly where TF-Agents' `DynamicStepDriver` (which does not count a
restart step, and steps on until it has counted its budget) took extra steps.
"""

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.environments import tf_py_environment

from pipelines.agents import agents
from pipelines.envs import environments
from pipelines.training import collection, learning

COPIES = 8


class ShortEpisodes(gym.Env):
  """Episodes of 2 or 3 steps, alternating; one ends by time limit, the next terminates."""

  observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
  action_space = gym.spaces.Discrete(2)

  def __init__(self):
    self._t, self._episode = 0, 0

  def reset(self, seed=None, options=None):
    super().reset(seed=seed)
    self._t, self._episode = 0, self._episode + 1
    return np.zeros(2, np.float32), {}

  def step(self, action):
    self._t += 1
    end = self._t >= 2 + self._episode % 2
    terminated, truncated = end and self._episode % 2 == 0, end and self._episode % 2 == 1
    return np.full(2, self._t / 3, np.float32), 1.0, terminated, truncated, {}


def _setup(agent_fn, **agent_kwargs):
  tf.random.set_seed(0)
  py_env = environments.make_environment(env_fn=ShortEpisodes, num_envs=COPIES)
  tf_env = tf_py_environment.TFPyEnvironment(py_env)
  metrics = collection.TrainingMetrics.create(COPIES)
  train_step = tf.Variable(0, dtype=tf.int64)
  agent = agent_fn(
    tf_env.time_step_spec(),
    tf_env.action_spec(),
    train_step,
    metrics.env_steps.environment_steps,
    optimizer=tf.keras.optimizers.Adam(1e-3),
    **agent_kwargs,
  )
  return tf_env, metrics, train_step, agent


@pytest.mark.parametrize("collect, train", [(8, 4), (16, 2)])
def test_off_policy_gradient_steps_are_the_ratio_times_env_steps(collect, train):
  tf_env, metrics, train_step, agent = _setup(agents.dqn_agent)
  trainer = learning.OffPolicyTrainer(
    agent,
    tf_env,
    metrics.observers,
    dataset_fn=lambda buffer: buffer.as_dataset(sample_batch_size=4, num_steps=2),
    initial_collect_steps=16,
    collect_steps_per_iteration=collect,
    train_steps_per_iteration=train,
    jit_compile=False,  # what is counted does not depend on XLA; compiling costs seconds
  )
  trainer.initialize()
  after_initial = int(metrics.env_steps.result())
  iterations = 30
  trainer.run(iterations)
  env_steps = int(metrics.env_steps.result()) - after_initial
  # Every iteration is collect / copies batched steps; some of them only restart a copy.
  restarts = iterations * collect - env_steps
  assert restarts > iterations * collect // 5, "the environment should restart copies often"
  assert int(trainer.collected) == env_steps
  assert abs(int(train_step) - env_steps * train / collect) < 1, (int(train_step), env_steps)


class _BatchSpy:
  """An observer that records how many steps (restart steps included) each batch holds."""

  def __init__(self):
    self.steps = tf.Variable(0, dtype=tf.int64)

  def __call__(self, traj):
    return self.steps.assign_add(tf.size(traj.step_type, out_type=tf.int64))


# One PPO epoch: the batch is what is checked, and TF-Agents unrolls every epoch in the graph.
@pytest.mark.parametrize(
  "agent_fn, kwargs", [(agents.ppo_agent, {"num_epochs": 1}), (agents.a2c_agent, {})], ids=["ppo", "a2c"]
)
def test_on_policy_batch_is_exactly_the_configured_steps(agent_fn, kwargs):
  tf_env, metrics, train_step, agent = _setup(agent_fn, **kwargs)
  spy = _BatchSpy()
  seen = tf.Variable([0, 0])
  train = agent.train

  def recording_train(experience, weights=None):
    seen.assign(tf.shape(experience.step_type))
    return train(experience, weights)

  agent.train = recording_train
  trainer = learning.OnPolicyTrainer(agent, tf_env, [*metrics.observers, spy], collect_per_iteration=64)
  trainer.run(3)
  per_copy = 64 // COPIES
  # 8 batched steps of 8 copies per iteration, never more: the buffer (8 per copy) is not overwritten.
  assert int(spy.steps) == 3 * 64
  assert int(metrics.env_steps.result()) < 3 * 64  # restart steps are not env steps
  # The agent sees the whole batch plus the step the driver stopped at (for the bootstrap).
  assert seen.numpy().tolist() == [COPIES, per_copy + 1]
