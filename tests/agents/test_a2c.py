"""A2CAgent's loss is the A2C loss: n-step returns bootstrapped from V, raw advantages."""

import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipelines.agents import a2c, networks

FIRST, MID, LAST = ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST


def test_loss_matches_the_a2c_formula():
  tf.random.set_seed(0)
  observation_spec = tensor_spec.TensorSpec([4], tf.float32)
  action_spec = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 1)
  time_step_spec = ts.time_step_spec(observation_spec)
  actor = networks.actor_network(observation_spec, action_spec, fc_layer_params=(8,))
  value = networks.value_network(observation_spec, fc_layer_params=(8,))
  gamma, value_coef, entropy_coef = 0.9, 0.5, 0.01
  agent = a2c.A2CAgent(
    time_step_spec, action_spec, actor, value, tf.keras.optimizers.SGD(0.0), gamma, value_coef, entropy_coef
  )
  # Copy 0: an episode ends by time limit at step 2 (discount 1), the next starts at 3.
  # Copy 1: a terminal at step 1 (discount 0), then a new episode.
  step_type = np.array([[FIRST, MID, LAST, FIRST, MID], [MID, LAST, FIRST, MID, MID]], np.int32)
  next_step_type = np.array([[MID, LAST, FIRST, MID, MID], [LAST, FIRST, MID, MID, MID]], np.int32)
  reward = np.array([[1, 2, 0, 3, 4], [5, 0, 6, 7, 8]], np.float32)
  discount = np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], np.float32)
  observation = np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)
  action = np.array([[0, 1, 0, 1, 1], [1, 0, 0, 1, 0]], np.int64)
  experience = trajectory.Trajectory(step_type, observation, action, (), next_step_type, reward, discount)

  v = value(observation, step_type=step_type, network_state=())[0].numpy()
  logits = actor(observation, step_type=step_type, network_state=())[0].logits_parameter().numpy()
  log_pi = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  returns = np.zeros((2, 4), np.float32)
  for b in range(2):
    following = v[b, 4]  # bootstrap from the batch's last observation
    for t in reversed(range(4)):
      if step_type[b, t] == LAST:  # between episodes: the return restarts from V(s_last)
        following = v[b, t]
        continue
      following = reward[b, t] + gamma * discount[b, t] * following
      returns[b, t] = following
  valid = step_type[:, :4] != LAST
  advantage = returns - v[:, :4]
  chosen = np.take_along_axis(log_pi[:, :4], action[:, :4, None], -1)[..., 0]
  entropy = -(np.exp(log_pi) * log_pi).sum(-1)[:, :4]
  expected = (
    -(chosen * advantage)[valid].mean()
    + value_coef * (advantage**2)[valid].mean()
    - entropy_coef * entropy[valid].mean()
  )
  loss = agent.train(tf.nest.map_structure(tf.convert_to_tensor, experience)).loss
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
