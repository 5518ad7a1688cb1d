"""The gymnasium -> TF-Agents adapter: specs, discounts at episode ends, seeding, rendering."""

import gymnasium as gym
import numpy as np
import pytest
from tf_agents.trajectories import time_step as ts

from pipelines.envs import environments
from pipelines.errors import PipelineError


def _single(env_id, seed=0, **kwargs):
  return environments.GymnasiumEnvironment(gym.make(env_id, **kwargs), seed=seed)


def test_discrete_and_box_specs_keep_dtypes_and_bounds():
  cartpole = _single("CartPole-v1")
  assert cartpole.action_spec().dtype == np.int64
  assert (cartpole.action_spec().minimum, cartpole.action_spec().maximum) == (0, 1)
  assert cartpole.observation_spec().dtype == np.float32
  assert cartpole.observation_spec().shape == (4,)
  pendulum = _single("Pendulum-v1")
  assert pendulum.action_spec().dtype == np.float32
  assert pendulum.action_spec().shape == (1,)
  np.testing.assert_allclose(pendulum.action_spec().minimum, [-2.0])
  np.testing.assert_allclose(pendulum.action_spec().maximum, [2.0])
  first = pendulum.reset()
  assert first.observation.dtype == np.float32
  assert first.step_type == ts.StepType.FIRST


def test_terminal_has_discount_zero():
  env = _single("CartPole-v1")
  env.reset()
  for _ in range(100):  # always pushing left topples the pole within a few dozen steps
    step = env.step(np.int64(0))
    if step.is_last():
      break
  assert step.is_last()
  assert step.discount == 0.0
  assert env.step(np.int64(0)).is_first()  # auto-reset


def test_time_limit_is_a_last_step_that_still_bootstraps():
  env = _single("CartPole-v1", max_episode_steps=3)
  env.reset()
  steps = [env.step(np.int64(a)) for a in (0, 1, 0)]
  assert [int(s.step_type) for s in steps] == [ts.StepType.MID, ts.StepType.MID, ts.StepType.LAST]
  assert steps[-1].discount == 1.0


def test_vector_environment_marks_truncation_termination_and_restart():
  env = environments.make_environment(
    lambda: gym.make("CartPole-v1", max_episode_steps=5), num_envs=2, seed=0
  )
  assert env.batched and env.batch_size == 2
  first = env.reset()
  np.testing.assert_array_equal(first.step_type, [ts.StepType.FIRST] * 2)
  # copy 0 always pushes left (terminates after ~10 steps, but the 5-step limit comes first).
  steps = [env.step(np.array([0, a % 2])) for a in range(6)]
  np.testing.assert_array_equal(steps[4].step_type, [ts.StepType.LAST] * 2)
  np.testing.assert_array_equal(steps[4].discount, [1.0, 1.0])  # truncated: bootstrap
  np.testing.assert_array_equal(steps[5].step_type, [ts.StepType.FIRST] * 2)
  np.testing.assert_array_equal(steps[5].reward, [0.0, 0.0])

  falling = environments.make_environment(lambda: gym.make("CartPole-v1"), num_envs=1, seed=0)
  falling.reset()
  for _ in range(100):
    step = falling.step(np.array([0]))
    if step.is_last()[0]:
      break
  assert step.is_last()[0] and step.discount[0] == 0.0


def test_seeding_reproduces_and_separates_copies():
  make = lambda seed: environments.make_environment(  # noqa: E731
    lambda: gym.make("CartPole-v1"), num_envs=3, seed=seed
  )
  a, b, c = make(7).reset(), make(7).reset(), make(8).reset()
  np.testing.assert_array_equal(a.observation, b.observation)
  assert not np.allclose(a.observation, c.observation)
  assert not np.allclose(a.observation[0], a.observation[1])
  single = _single("CartPole-v1", seed=7).reset()
  np.testing.assert_array_equal(single.observation, a.observation[0])
  # Runs of neighbouring seeds share no copy (gymnasium's seed + i would share 2 of 3).
  for i in range(3):
    for j in range(3):
      assert not np.allclose(c.observation[i], a.observation[j])
  assert environments.copy_seeds(7, 3) == environments.copy_seeds(7, 5)[:3]


def test_rgb_array_rendering():
  env = environments.make_environment(
    lambda: gym.make("CartPole-v1", render_mode="rgb_array"), num_envs=1, seed=0
  )
  env.reset()
  frame = env.render()
  assert frame.dtype == np.uint8 and frame.shape[0] == 1 and frame.shape[-1] == 3
  single = _single("CartPole-v1", render_mode="rgb_array")
  single.reset()
  assert single.render().shape == frame.shape[1:]


def test_unknown_environment_suggests_nearest_ids():
  with pytest.raises(PipelineError, match="CartPole-v1"):
    environments.check_env_id("CartPole-v9")


def test_worker_processes_match_in_process_copies():
  make = lambda parallel: environments.make_environment(  # noqa: E731
    lambda: gym.make("CartPole-v1"), num_envs=2, parallel=parallel, seed=3
  )
  in_process, workers = make(False), make(True)
  try:
    np.testing.assert_array_equal(in_process.reset().observation, workers.reset().observation)
    for _ in range(30):
      a, b = in_process.step(np.array([0, 1])), workers.step(np.array([0, 1]))
      np.testing.assert_array_equal(a.observation, b.observation)
      np.testing.assert_array_equal(a.step_type, b.step_type)
  finally:
    workers.close()
