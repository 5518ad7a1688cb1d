"""A2C, the synchronous advantage actor-critic (Mnih et al. 2016), as a TF-Agents agent.

    pipelines-train --gin_file=gin/a2c_cartpole.gin --root_dir=runs/a2c

TF-Agents 0.19 has no A2C agent, and none of its agents computes the A2C gradient under
any settings: `PPOAgent` with one epoch and no clipping comes closest (its policy term
-ratio * A has gradient -A * grad log pi at ratio 1), but it always standardises the
advantages (`ppo_agent._normalize_advantages`, no switch), which subtracts a batch-mean
baseline and rescales the step by 1 / std; `ReinforceAgent` uses Monte Carlo returns of
whole episodes, never an n-step bootstrap. So this module holds a small agent built from
TF-Agents parts (`ActorPolicy`, `GreedyPolicy`, `value_ops.discounted_return`).

The loss over one batch of T steps from each of B environment copies, averaged over the
valid transitions (a LAST -> FIRST step between episodes is none, nor is step T, which
only provides the bootstrap value):

  R_t = r_t + gamma * d_t * R_{t+1},  R_T = V(s_T)          (n-step returns, no gradient)
  loss = -log pi(a_t | s_t) * (R_t - V(s_t))                  (advantage, no gradient)
         + value_loss_coef * (R_t - V(s_t))^2 - entropy_coef * H(pi(. | s_t))

A return restarts at an episode boundary from V(s_last): a time-limit end (discount 1)
bootstraps from its last observation, a terminal one (discount 0) ignores it.
"""

from __future__ import annotations

import collections

import tensorflow as tf
from tf_agents.agents import data_converter, tf_agent
from tf_agents.networks import network
from tf_agents.policies import actor_policy, greedy_policy
from tf_agents.utils import common, value_ops

A2CLossInfo = collections.namedtuple("A2CLossInfo", ("policy_loss", "value_loss", "entropy_loss"))


class A2CAgent(tf_agent.TFAgent):
  """Advantage actor-critic with separate policy and value networks on the same input.

  gamma: discount per env step. value_loss_coef: weight of the squared value error.
  entropy_coef: weight of the entropy bonus. gradient_clipping: global-norm clip (None: off).
  """

  def __init__(
    self,
    time_step_spec,
    action_spec,
    actor_net: network.Network,
    value_net: network.Network,
    optimizer: tf.keras.optimizers.Optimizer,
    gamma: float = 0.99,
    value_loss_coef: float = 0.5,
    entropy_coef: float = 0.01,
    gradient_clipping: float | None = None,
    train_step_counter: tf.Variable | None = None,
    name: str = "A2CAgent",
  ):
    tf.Module.__init__(self, name=name)
    self._actor_net = actor_net
    self._value_net = value_net
    self._optimizer = optimizer
    self._gamma = gamma
    self._value_loss_coef = value_loss_coef
    self._entropy_coef = entropy_coef
    self._gradient_clipping = gradient_clipping
    value_net.create_variables(time_step_spec.observation)
    collect_policy = actor_policy.ActorPolicy(time_step_spec, action_spec, actor_network=actor_net)
    super().__init__(
      time_step_spec,
      action_spec,
      greedy_policy.GreedyPolicy(collect_policy),
      collect_policy,
      train_sequence_length=None,
      train_step_counter=train_step_counter,
    )
    self._as_trajectory = data_converter.AsTrajectory(self.data_context, sequence_length=None)

  def _initialize(self):
    pass

  def _train(self, experience, weights=None):
    experience = self._as_trajectory(experience)  # [B, T] steps
    boundary = experience.is_boundary()
    valid = tf.cast(~boundary, tf.float32)[:, :-1]
    if weights is not None:
      valid *= weights[:, :-1]
    count = tf.maximum(tf.reduce_sum(valid), 1.0)
    variables = self._actor_net.trainable_weights + self._value_net.trainable_weights
    with tf.GradientTape() as tape:
      inputs = dict(step_type=experience.step_type, network_state=(), training=True)
      values, _ = self._value_net(experience.observation, **inputs)
      bootstrap = tf.stop_gradient(values)
      # At a boundary step the reward stands in for V(s_last) and the discount cuts the sum.
      rewards = tf.where(boundary, bootstrap, experience.reward)
      discounts = tf.where(boundary, 0.0, experience.discount * self._gamma)
      returns = value_ops.discounted_return(
        rewards[:, :-1], discounts[:, :-1], final_value=bootstrap[:, -1], time_major=False
      )
      advantages = tf.stop_gradient(returns - values[:, :-1])
      distribution, _ = self._actor_net(experience.observation, **inputs)
      log_prob = common.log_probability(distribution, experience.action, self.action_spec)[:, :-1]
      entropy = common.entropy(distribution, self.action_spec)[:, :-1]
      policy_loss = -tf.reduce_sum(log_prob * advantages * valid) / count
      value_loss = self._value_loss_coef * tf.reduce_sum(tf.square(returns - values[:, :-1]) * valid) / count
      entropy_loss = -self._entropy_coef * tf.reduce_sum(entropy * valid) / count
      loss = policy_loss + value_loss + entropy_loss
    gradients = tape.gradient(loss, variables)
    if self._gradient_clipping:
      gradients, _ = tf.clip_by_global_norm(gradients, self._gradient_clipping)
    self._optimizer.apply_gradients(zip(gradients, variables, strict=True))
    self.train_step_counter.assign_add(1)
    return tf_agent.LossInfo(loss, A2CLossInfo(policy_loss, value_loss, entropy_loss))
