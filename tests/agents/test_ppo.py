"""PPO's returns and advantages: a time-limit end bootstraps, a terminal does not.

    .venv/bin/python -m pytest -q tests/agents/test_ppo.py

The expected numbers come from a plain NumPy GAE written here, the way SB3's
`RolloutBuffer.compute_returns_and_advantage` does it after `collect_rollouts` has added
gamma * V(terminal observation) to the reward of a truncated step.
"""

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.agents.ppo import ppo_clip_agent
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipelines.agents import agents

FIRST, MID, LAST = ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST
GAMMA, LAMBDA = 0.9, 0.8

# One copy, 7 collected steps and the step the driver stopped at (bootstrap only):
# an episode truncated by its time limit (t=1 -> t=2, discount 1), a boundary step, an
# episode that terminates (t=4 -> t=5, discount 0), a boundary step, a running episode.
STEP_TYPE = [FIRST, MID, LAST, FIRST, MID, LAST, FIRST, MID]
NEXT_STEP_TYPE = [MID, LAST, FIRST, MID, LAST, FIRST, MID, MID]
REWARD = [1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 5.0, 0.0]
DISCOUNT = [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
VALUE = [0.5, 0.6, 2.0, 0.3, 0.4, 9.0, 0.2, 0.7]  # V(s_2) = 2: the truncated episode's last state


def _numpy_gae(use_gae: bool):
  """SB3's recursion over SB3's data: real transitions only, truncation in the reward."""
  # (reward, V(s), V(s') or None if s' ended the episode by termination, ends episode)
  transitions = [
    (REWARD[0], VALUE[0], VALUE[1], False),
    (REWARD[1] + GAMMA * VALUE[2], VALUE[1], None, True),  # truncated: gamma V(terminal obs)
    (REWARD[3], VALUE[3], VALUE[4], False),
    (REWARD[4], VALUE[4], None, True),  # terminal: nothing
    (REWARD[6], VALUE[6], VALUE[7], False),  # the batch ends: bootstrap from V(s_T)
  ]
  advantages, returns = [0.0] * 5, [0.0] * 5
  gae, following = 0.0, VALUE[7]
  for i in reversed(range(5)):
    reward, value, next_value, done = transitions[i]
    if use_gae:
      delta = reward + (0.0 if done else GAMMA * next_value) - value
      gae = delta + (0.0 if done else GAMMA * LAMBDA * gae)
      advantages[i], returns[i] = gae, gae + value
    else:
      following = reward + (0.0 if done else GAMMA * following)
      returns[i], advantages[i] = following, following - value
  return np.array(advantages), np.array(returns)


def _agent(use_gae: bool):
  observation_spec = tensor_spec.TensorSpec([2], tf.float32)
  action_spec = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 1)
  return agents.ppo_agent(
    ts.time_step_spec(observation_spec),
    action_spec,
    tf.Variable(0, dtype=tf.int64),
    tf.Variable(0, dtype=tf.int64),
    optimizer=tf.keras.optimizers.Adam(1e-3),
    discount_factor=GAMMA,
    use_gae=use_gae,
    lambda_value=LAMBDA,
    normalize_observations=False,
    normalize_rewards=False,
  )


def _experience():
  n = len(STEP_TYPE)
  row = lambda values, dtype: tf.constant([values], dtype)  # noqa: E731
  return trajectory.Trajectory(
    step_type=row(STEP_TYPE, tf.int32),
    observation=tf.constant(np.arange(2 * n, dtype=np.float32).reshape(1, n, 2)),
    action=row([0, 1] * (n // 2), tf.int64),
    policy_info={"dist_params": {"logits": tf.zeros([1, n, 2])}, "value_prediction": row(VALUE, tf.float32)},
    next_step_type=row(NEXT_STEP_TYPE, tf.int32),
    reward=row(REWARD, tf.float32),
    discount=row(DISCOUNT, tf.float32),
  )


REAL = [0, 1, 3, 4, 6]  # steps that are transitions (not boundaries, not the bootstrap step)


@pytest.mark.parametrize("use_gae", [True, False], ids=["gae", "monte-carlo"])
def test_truncation_bootstraps_and_termination_does_not(use_gae):
  processed = _agent(use_gae).preprocess_sequence(_experience())
  advantages = processed.policy_info["advantage"].numpy()[0, REAL]
  returns = processed.policy_info["return"].numpy()[0, REAL]
  expected_advantages, expected_returns = _numpy_gae(use_gae)
  np.testing.assert_allclose(advantages, expected_advantages, rtol=1e-5)
  np.testing.assert_allclose(returns, expected_returns, rtol=1e-5)


def test_tf_agents_own_ppo_treats_truncation_as_termination():
  """Why pipelines.ppo replaces the return computation. TF-Agents 0.19's PPOAgent, same data:
  - the truncated step (t=1) gets no bootstrap: its episode mask zeroes the discount at
    every LAST, so its advantage lacks gamma * V(s_2), and t=0 inherits that through GAE;
  - the batch's last transition (t=6) bootstraps from V(s_6), its own state, instead of
    V(s_7): `compute_advantages` strips the last value, then takes the last of the rest.
  The terminal episode (t=3, t=4) agrees."""
  ours = _agent(True)
  theirs = ppo_clip_agent.PPOClipAgent(
    ours.time_step_spec,
    ours.action_spec,
    optimizer=tf.keras.optimizers.Adam(1e-3),
    actor_net=ours.actor_net,
    value_net=ours._value_net,
    discount_factor=GAMMA,
    use_gae=True,
    use_td_lambda_return=True,
    lambda_value=LAMBDA,
    compute_value_and_advantage_in_train=False,
    normalize_observations=False,
    normalize_rewards=False,
  )
  advantages = theirs.preprocess_sequence(_experience()).policy_info["advantage"].numpy()[0, REAL]
  expected, _ = _numpy_gae(True)
  missing = GAMMA * VALUE[2]
  assert advantages[1] == pytest.approx(expected[1] - missing, rel=1e-5)
  assert advantages[0] == pytest.approx(expected[0] - GAMMA * LAMBDA * missing, rel=1e-5)
  np.testing.assert_allclose(advantages[2:4], expected[2:4], rtol=1e-5)
  assert advantages[4] == pytest.approx(expected[4] - GAMMA * (VALUE[7] - VALUE[6]), rel=1e-5)


def test_minibatches_hold_real_transitions_only():
  """Boundary steps and the bootstrap-only last step never reach the loss or the normalisers."""
  agent = _agent(True)
  seen = []
  parent = ppo_clip_agent.PPOClipAgent._train

  def spy(self, experience, weights=None):
    seen.append(experience.step_type.numpy()[:, 0].tolist())
    return parent(self, experience, weights)

  ppo_clip_agent.PPOClipAgent._train = spy
  try:
    agent._num_minibatches = 1
    agent.train(agent.preprocess_sequence(_experience()))  # eager: the spy sees each minibatch
  finally:
    ppo_clip_agent.PPOClipAgent._train = parent
  assert len(seen) == agent._epochs
  for minibatch in seen:
    assert sorted(minibatch) == sorted(STEP_TYPE[i] for i in REAL)
