"""Replay: a resumed run never samples a transition that joins two episodes; the sampler
follows the experiment's seed.

    .venv/bin/python -m pytest -q tests/replay/test_replay.py
"""

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.environments import tf_py_environment
from tf_agents.policies import tf_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step, trajectory
from tf_agents.trajectories import time_step as ts

from pipelines.agents import agents
from pipelines.envs import environments
from pipelines.replay import replay
from pipelines.training import collection, evaluation, learning

FIRST, MID, LAST = ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST
COPIES = 2


def _spec(frames: bool):
  observation = (
    tensor_spec.BoundedTensorSpec((4, 3, 3), tf.uint8, 0, 255)
    if frames
    else tensor_spec.TensorSpec((2,), tf.float32)
  )
  return trajectory.Trajectory(
    step_type=tensor_spec.TensorSpec((), tf.int32),
    observation=observation,
    action=tensor_spec.BoundedTensorSpec((), tf.int64, 0, 1),
    policy_info=(),
    next_step_type=tensor_spec.TensorSpec((), tf.int32),
    reward=tensor_spec.TensorSpec((), tf.float32),
    discount=tensor_spec.TensorSpec((), tf.float32),
  )


def _step(spec, step_type, next_step_type, index):
  """One batched trajectory step; the action field carries its index for identification."""
  observation = np.full((COPIES, *spec.observation.shape), index, spec.observation.dtype.as_numpy_dtype)
  return trajectory.Trajectory(
    step_type=tf.fill([COPIES], step_type),
    observation=tf.constant(observation),
    action=tf.fill([COPIES], tf.constant(index, tf.int64)),
    policy_info=(),
    next_step_type=tf.fill([COPIES], next_step_type),
    reward=tf.ones([COPIES]),
    discount=tf.ones([COPIES]),
  )


def _fill_then_resume(buffer, spec):
  """Steps 0-4 of one episode, a checkpoint/restart (end_stored_episodes), then steps 5-7
  of the episode the restarted environment begins."""
  types = [(FIRST, MID), (MID, MID), (MID, MID), (MID, MID), (MID, MID)]
  for i, (step_type, next_step_type) in enumerate(types):
    buffer.add_batch(_step(spec, step_type, next_step_type, i))
  buffer.end_stored_episodes()
  for i, (step_type, next_step_type) in enumerate([(FIRST, MID), (MID, MID), (MID, MID)], start=5):
    buffer.add_batch(_step(spec, step_type, next_step_type, i))


def _windows(buffer, n=512):
  dataset = buffer.as_dataset(sample_batch_size=n, num_steps=2)
  experience, _ = next(iter(dataset))
  return experience


@pytest.mark.parametrize("frames", [False, True], ids=["uniform", "frame_stack"])
def test_a_resumed_replay_samples_no_transition_across_the_restart(frames):
  spec = _spec(frames)
  buffer = replay.uniform_replay(spec, COPIES) if not frames else replay.frame_stack_replay(spec, COPIES, 64)
  _fill_then_resume(buffer, spec)
  experience = _windows(buffer)
  first, second = experience.action[:, 0].numpy(), experience.action[:, 1].numpy()
  learned = ~experience.is_boundary()[:, 0].numpy()  # what DQN's and C51's losses keep
  assert (first == 4).any(), "the window joining the two episodes should be drawn"
  # Step 4's successor was never stored: its window is between episodes, never learned.
  assert not learned[first == 4].any()
  # Step 3 -> 4 is a real transition, now the end of its episode (it bootstraps from step 4).
  assert (experience.next_step_type[:, 0].numpy()[first == 3] == LAST).all()
  assert learned[first == 3].all() and (second[first == 3] == 4).all()
  assert learned[(first != 4)].all()


def test_off_policy_trainer_ends_a_restored_replays_episodes():
  py_env = environments.make_environment(env_fn=lambda: _cartpole(), num_envs=COPIES)
  tf_env = tf_py_environment.TFPyEnvironment(py_env)
  metrics = collection.TrainingMetrics.create(COPIES)
  agent = agents.dqn_agent(
    tf_env.time_step_spec(),
    tf_env.action_spec(),
    tf.Variable(0, dtype=tf.int64),
    metrics.env_steps.environment_steps,
    optimizer=tf.keras.optimizers.Adam(1e-3),
  )
  trainer = learning.OffPolicyTrainer(
    agent, tf_env, metrics.observers, initial_collect_steps=10, collect_steps_per_iteration=COPIES
  )
  trainer.initialize()  # a fresh run: random steps, episodes left running
  assert trainer.replay.gather_all().step_type.numpy()[:, -1].tolist() != [LAST] * COPIES
  trainer.initialize()  # what a resumed run does: its replay was restored non-empty
  stored = trainer.replay.gather_all()
  assert stored.step_type.numpy()[:, -1].tolist() == [LAST] * COPIES
  assert stored.next_step_type.numpy()[:, -2].tolist() == [LAST] * COPIES


def _cartpole():
  import gymnasium as gym

  return gym.make("CartPole-v1")


def test_frame_store_sampler_follows_the_experiment_seed():
  spec = _spec(True)

  def sampled(seed):
    np.random.seed(seed)  # what build_components does with build_components.seed
    store = replay.FrameStore(spec, COPIES, 64)
    for i in range(20):
      observation = np.full((COPIES, 4, 3, 3), i, np.uint8)
      store.add(
        observation,
        np.full(COPIES, MID),
        [np.full(COPIES, MID), np.full(COPIES, i), np.full(COPIES, MID)] + [np.ones(COPIES)] * 2,
      )
    return store.sample(16, 2)[2]

  np.testing.assert_array_equal(sampled(1), sampled(1))
  assert not np.array_equal(sampled(1), sampled(2))


def test_evaluator_epsilon_draws_follow_its_seed():
  def lengths(seed):
    tf.random.set_seed(0)  # the random actions; the evaluator's seed decides which are taken
    py_env = environments.make_environment(env_fn=lambda: _cartpole(), num_envs=4, seed=0)
    env = tf_py_environment.TFPyEnvironment(py_env)  # the same first states every call
    evaluator = evaluation.Evaluator(num_episodes=8, epsilon=0.5, seed=seed)
    return evaluator(env, _constant_action(env, evaluation.random_policy(env))).lengths

  assert lengths(1) == lengths(1)
  assert lengths(1) != lengths(2)


def _constant_action(env, random_policy):
  """A policy that always pushes left: only the evaluator's epsilon draws vary the episodes."""

  class Left(tf_policy.TFPolicy):
    def _action(self, time_step, policy_state, seed):
      return policy_step.PolicyStep(tf.zeros(tf.shape(time_step.step_type), tf.int64), policy_state)

    def _distribution(self, time_step, policy_state):
      raise NotImplementedError

  return Left(env.time_step_spec(), env.action_spec())
