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


# Observation spaces beyond Box and Discrete: specs as TF-Agents' gym wrapper gives them for
# the same `gym` (0.23, tf-agents' own dependency) space, observations in the spec's nest.


def _tf_agents_spec(old_gym_space):
  from tf_agents.environments import gym_wrapper

  return gym_wrapper.spec_from_gym_space(old_gym_space, name="observation")


def _space_pairs():
  import gym as old_gym  # what tf-agents' gym_wrapper speaks

  new, old = gym.spaces, old_gym.spaces
  box = lambda space: space.Box(-1.0, 1.0, (2,), np.float32)  # noqa: E731
  return {
    "multi_discrete": (new.MultiDiscrete([3, 4]), old.MultiDiscrete([3, 4])),
    "multi_discrete_same_bounds": (new.MultiDiscrete([5, 5]), old.MultiDiscrete([5, 5])),
    "multi_binary": (new.MultiBinary(4), old.MultiBinary(4)),
    "multi_binary_2d": (new.MultiBinary([2, 3]), old.MultiBinary([2, 3])),
    "tuple": (new.Tuple((new.Discrete(3), box(new))), old.Tuple((old.Discrete(3), box(old)))),
    "dict": (
      new.Dict({"position": box(new), "flags": new.MultiBinary(3)}),
      old.Dict({"position": box(old), "flags": old.MultiBinary(3)}),
    ),
    "nested": (
      new.Dict({"position": box(new), "pair": new.Tuple((new.Discrete(2), new.MultiDiscrete([3, 3])))}),
      old.Dict({"position": box(old), "pair": old.Tuple((old.Discrete(2), old.MultiDiscrete([3, 3])))}),
    ),
  }


@pytest.mark.parametrize("kind", list(_space_pairs()))
def test_spec_of_each_space_is_tf_agents_gym_wrappers(kind):
  import tensorflow as tf

  space, old_space = _space_pairs()[kind]
  ours, theirs = environments.space_to_spec(space, "observation"), _tf_agents_spec(old_space)
  tf.nest.assert_same_structure(ours, theirs)  # OrderedDict for Dict, tuple for Tuple
  for a, b in zip(tf.nest.flatten(ours), tf.nest.flatten(theirs), strict=True):
    assert (a.shape, a.dtype, a.name) == (b.shape, b.dtype, b.name)
    np.testing.assert_array_equal(a.minimum, b.minimum)
    np.testing.assert_array_equal(a.maximum, b.maximum)


def test_multi_discrete_start_shifts_its_bounds():
  # gymnasium's MultiDiscrete has a start (gym's had none): the bounds follow it, as Discrete's do.
  spec = environments.space_to_spec(gym.spaces.MultiDiscrete([3, 4], start=[1, -2]), "observation")
  np.testing.assert_array_equal(spec.minimum, [1, -2])
  np.testing.assert_array_equal(spec.maximum, [3, 1])


def test_nested_action_spaces_are_refused():
  with pytest.raises(PipelineError, match="nested action spaces"):
    environments.action_space_to_spec(gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(2))))


class _DictEnv(gym.Env):
  """Every kind of part in one nested observation; terminates after 3 steps; the observation
  encodes the step count t, so a test can tell which step it came from."""

  observation_space = gym.spaces.Dict(
    {
      "position": gym.spaces.Box(-10.0, 10.0, (2,), np.float64),
      "flags": gym.spaces.MultiBinary(3),
      "mode": gym.spaces.Discrete(3),
      "pair": gym.spaces.Tuple((gym.spaces.Discrete(4), gym.spaces.MultiDiscrete([5, 5]))),
    }
  )
  action_space = gym.spaces.Discrete(2)

  def _observation(self):
    t = self._t
    return {
      "position": np.array([t, -t], np.float64),
      "flags": np.array([t % 2, 1, 0], np.int8),
      "mode": t % 3,
      "pair": (t, np.array([t, 4 - t])),
    }

  def reset(self, seed=None, options=None):
    super().reset(seed=seed)
    self._t = 0
    return self._observation(), {}

  def step(self, action):
    self._t += 1
    return self._observation(), 1.0, self._t == 3, False, {}


def _expected(t):
  pair = (t, np.array([t, 4 - t]))
  return {"position": np.array([t, -t]), "flags": np.array([t % 2, 1, 0]), "mode": t % 3, "pair": pair}


def _assert_observation(observation, spec, t, batch=None):
  from tf_agents.specs import array_spec

  assert isinstance(observation, dict) and list(observation) == list(spec)  # the spec's key order
  assert isinstance(observation["pair"], tuple)
  assert array_spec.check_arrays_nest(observation, spec if batch is None else _batched(spec, batch))
  import tensorflow as tf

  expected = _expected(t)
  for got, want in zip(tf.nest.flatten(observation), tf.nest.flatten(expected), strict=True):
    np.testing.assert_array_equal(got, want if batch is None else np.stack([want] * batch))


def _batched(spec, batch):
  import tensorflow as tf
  from tf_agents.specs import array_spec

  return tf.nest.map_structure(lambda s: array_spec.add_outer_dims_nest(s, (batch,)), spec)


def test_nested_observation_round_trip_through_reset_and_step():
  env = environments.GymnasiumEnvironment(_DictEnv(), seed=0)
  spec = env.observation_spec()
  assert spec["flags"].dtype == np.int32 and spec["position"].dtype == np.float32
  _assert_observation(env.reset().observation, spec, 0)
  steps = [env.step(np.int64(0)) for _ in range(3)]
  for t, step in enumerate(steps, 1):
    _assert_observation(step.observation, spec, t)
  assert steps[-1].is_last() and steps[-1].discount == 0.0  # terminated: no bootstrap
  restart = env.step(np.int64(0))
  assert restart.is_first()
  _assert_observation(restart.observation, spec, 0)

  truncated = environments.GymnasiumEnvironment(gym.wrappers.TimeLimit(_DictEnv(), 2), seed=0)
  truncated.reset()
  last = [truncated.step(np.int64(1)) for _ in range(2)][-1]
  assert last.is_last() and last.discount == 1.0  # a time-limit end still bootstraps


def test_nested_observation_round_trip_through_the_vector_environment():
  env = environments.make_environment(_DictEnv, num_envs=2, seed=0)
  spec = env.observation_spec()
  _assert_observation(env.reset().observation, spec, 0, batch=2)
  steps = [env.step(np.array([0, 1])) for _ in range(4)]
  for t, step in enumerate(steps[:3], 1):
    _assert_observation(step.observation, spec, t, batch=2)
  np.testing.assert_array_equal(steps[2].discount, [0.0, 0.0])
  np.testing.assert_array_equal(steps[3].step_type, [ts.StepType.FIRST] * 2)
  _assert_observation(steps[3].observation, spec, 0, batch=2)


def test_agents_and_networks_consume_a_dict_observation():
  """A DQN agent trains on replayed Dict observations, and PPO's networks read them: each
  part is flattened to floats and the parts concatenated (pipelines/agents/networks.py)."""
  import tensorflow as tf
  from tf_agents.drivers import dynamic_step_driver
  from tf_agents.environments import tf_py_environment
  from tf_agents.replay_buffers import tf_uniform_replay_buffer

  from pipelines.agents import agents, networks

  tf_env = tf_py_environment.TFPyEnvironment(environments.make_environment(_DictEnv, num_envs=2, seed=0))
  train_step, env_step = tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)
  agent = agents.dqn_agent(
    tf_env.time_step_spec(), tf_env.action_spec(), train_step, env_step, optimizer=tf.keras.optimizers.Adam()
  )
  replay = tf_uniform_replay_buffer.TFUniformReplayBuffer(agent.collect_data_spec, 2, max_length=16)
  dynamic_step_driver.DynamicStepDriver(tf_env, agent.collect_policy, [replay.add_batch], num_steps=16).run()
  experience, _ = next(iter(replay.as_dataset(sample_batch_size=8, num_steps=2)))
  assert np.isfinite(agent.train(experience).loss.numpy())
  assert int(train_step.numpy()) == 1

  time_step = tf_env.reset()
  actor = networks.actor_network(tf_env.observation_spec(), tf_env.action_spec())
  value = networks.value_network(tf_env.observation_spec())
  distribution, _ = actor(time_step.observation, time_step.step_type, ())
  assert distribution.sample().shape == (2,)
  assert value(time_step.observation, time_step.step_type)[0].shape == (2,)
