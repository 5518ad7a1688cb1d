"""C51 whose TD targets stop at episode ends: TF-Agents' `CategoricalDqnAgent`, loss fixed.

    pipelines-train --gin_file=gin/c51_cartpole.gin --root_dir=runs/c51_n3 \
        --gin_bindings='c51_agent.n_step_update = 3' --gin_bindings='make_dataset.num_steps = 4'

`CategoricalDqnAgent._loss` in TF-Agents 0.19 is wrong at episode ends in two ways:
- It trains on the step between two episodes (LAST -> FIRST, whose action the environment
  ignored), pulling Z(s_last, a) towards gamma * Z(s_first of the next episode). s_last is
  what a time-limit end bootstraps from. `DqnAgent._loss` masks these steps
  (`~time_steps.is_last()`); C51's does not, and it ignores `weights`.
- With `n_step_update` > 1 it sums rewards over the whole window (its own TODO
  b/134618876): after a time-limit end (discount 1) it adds the next episode's rewards and
  bootstraps from a state of the next episode instead of from s_last.

`C51Agent` cuts each window at its first episode end, as for any n-step target (Hessel et
al. 2018; Pardo et al. 2018, "Time Limits in Reinforcement Learning"): the sum stops at the
reward that ends the episode and bootstraps gamma^k * d * Z(s_last), so a time-limit end
(d = 1) bootstraps from its last observation and a terminal (d = 0) does not.
"""

from __future__ import annotations

import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.agents.categorical_dqn import categorical_dqn_agent
from tf_agents.agents.dqn import dqn_agent
from tf_agents.trajectories import policy_step, trajectory
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import common, value_ops


def n_step_transition(experience: trajectory.Trajectory, gamma: float) -> trajectory.Transition:
  """The transition of each [B, n + 1] window, its n-step sum cut at the first episode end.

  Same conventions as `trajectory.to_n_step_transition` (next_time_step.reward: the
  discounted sum; next_time_step.discount: gamma^(k - 1) * d_0 ... d_(k-1), which the loss
  multiplies by gamma once more), but over the first k steps only, k the position of the
  first step into a LAST step (n if none), and next_time_step is the k-th step: s_last
  for a window that holds an episode end. With n = 1 it is `to_transition`.
  """
  rewards = experience.reward[:, :-1]
  discounts = experience.discount[:, :-1]
  ends = tf.cast(tf.equal(experience.next_step_type[:, :-1], ts.StepType.LAST), tf.float32)
  inside = tf.cast(tf.equal(tf.cumsum(ends, axis=1, exclusive=True), 0.0), tf.float32)
  k = tf.cast(tf.reduce_sum(inside, axis=1), tf.int32)
  reward = value_ops.discounted_return(
    rewards * inside, gamma * discounts * inside, time_major=False, provide_all_returns=False
  )
  discount = tf.pow(tf.cast(gamma, tf.float32), tf.cast(k - 1, tf.float32)) * tf.reduce_prod(
    tf.where(inside > 0, discounts, 1.0), axis=1
  )

  def at(index):
    return lambda x: tf.gather(x, index, axis=1, batch_dims=1)

  first = tf.zeros_like(k)
  time_steps = ts.TimeStep(
    at(first)(experience.step_type),
    tf.zeros_like(reward),  # unknown, as in `to_transition`
    tf.zeros_like(discount),
    tf.nest.map_structure(at(first), experience.observation),
  )
  next_time_steps = ts.TimeStep(
    at(k)(experience.step_type), reward, discount, tf.nest.map_structure(at(k), experience.observation)
  )
  policy_steps = policy_step.PolicyStep(
    tf.nest.map_structure(at(first), experience.action),
    (),
    tf.nest.map_structure(at(first), experience.policy_info),
  )
  return trajectory.Transition(time_steps, policy_steps, next_time_steps)


class C51Agent(categorical_dqn_agent.CategoricalDqnAgent):
  """`CategoricalDqnAgent` with n-step targets cut at episode ends and boundary steps masked.

  Feed-forward networks only: TF-Agents' recurrent C51 path ([B, T] losses) is not kept.
  """

  def __init__(self, time_step_spec, action_spec, categorical_q_network, optimizer, **kwargs):
    if categorical_q_network.state_spec:
      raise ValueError("C51Agent supports feed-forward networks only (the network has a state)")
    super().__init__(time_step_spec, action_spec, categorical_q_network, optimizer, **kwargs)

  def _loss(
    self,
    experience,
    td_errors_loss_fn=None,
    gamma=1.0,
    reward_scale_factor=1.0,
    weights=None,
    training=False,
  ):
    del td_errors_loss_fn  # C51's loss is the cross-entropy to the projected target
    time_steps, policy_steps, next_time_steps = n_step_transition(experience, gamma)
    with tf.name_scope("critic_loss"):
      q_logits, _ = self._q_network(time_steps.observation, step_type=time_steps.step_type, training=training)
      actions = tf.reshape(policy_steps.action, [-1])  # a (1,)-shaped action spec too
      chosen_logits = tf.gather(q_logits, actions, axis=1, batch_dims=1)
      target_support = (
        reward_scale_factor * next_time_steps.reward[:, None]
        + gamma * next_time_steps.discount[:, None] * self._support
      )
      target = tf.stop_gradient(
        categorical_dqn_agent.project_distribution(
          target_support, self._next_q_distribution(next_time_steps), self._support
        )
      )
      # A window starting on the step between two episodes has no transition to learn.
      valid = tf.cast(~time_steps.is_last(), tf.float32)
      critic_loss = valid * tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=chosen_logits)
      agg_loss = common.aggregate_losses(
        per_example_loss=critic_loss, sample_weight=weights, regularization_loss=self._q_network.losses
      )
    common.summarize_scalar_dict(
      {
        "critic_loss": agg_loss.weighted,
        "reg_loss": agg_loss.regularization,
        "total_loss": agg_loss.total_loss,
      },
      step=self.train_step_counter,
      name_scope="Losses/",
    )
    return tf_agent.LossInfo(agg_loss.total_loss, dqn_agent.DqnLossInfo(td_loss=critic_loss, td_error=()))
