"""PPO whose epochs and minibatches run in a `tf.while_loop`: tracing costs one step.

    pipelines-train --gin_file=gin/ppo_cartpole.gin --root_dir=runs/ppo

`PPOClipAgent` runs its epochs as a Python loop, so the traced graph holds one copy of
the loss and gradient per epoch: 20 epochs cost ~90 s of tracing on a 2-core CPU before
the first env step, longer than the whole run. TF-Agents' own multi-epoch path,
`tf_agents.train.PPOLearner`, instead sets the agent to one epoch, computes values,
returns and advantages once per batch (`agent.preprocess_sequence`), feeds the epochs
and minibatches to `agent.train` one call each, then updates the observation and reward
normalisers. This agent does the same inside one graph: `train(preprocessed batch)`
loops over epochs x minibatches with `tf.while_loop` around PPOClipAgent's own one-epoch
update, then updates the normalisers. The loss, the clipping and the per-minibatch
advantage standardisation are PPOClipAgent's, untouched.

Two corrections to TF-Agents 0.19, both what SB3's PPO (`OnPolicyAlgorithm.collect_rollouts`,
`RolloutBuffer.compute_returns_and_advantage`) does:

* A time-limit end bootstraps. `PPOAgent.compute_return_and_advantage` multiplies the
  discounts by `common.get_episode_mask`, 0 at every LAST step, so a truncated step
  (discount 1 from our gymnasium adapter) was treated as a terminal. Here the discount
  decides the bootstrap, `delta_t = r_t + gamma d_t V(s_t+1) - V(s_t)` with `V(s_t+1)` the
  value of the episode's last observation, and the episode mask only stops GAE's sum from
  running into the next episode. SB3 adds `gamma V(terminal observation)` to the reward of
  a truncated step: the same number.
* Minibatches hold real transitions only. Steps between episodes (LAST -> FIRST) and the
  extra step the trainer appends for the final bootstrap are left out of the shuffled
  minibatches and of the normaliser updates, instead of entering them with weight 0 (which
  shrank every mean and skewed the advantage standardisation).

After preprocessing every step carries its own return and advantage, so minibatches are
drawn over single steps (as in OpenAI baselines), reshaped to [steps, 1]. Feed-forward
networks only (an RNN policy needs whole sequences).
"""

from __future__ import annotations

import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.agents.ppo import ppo_clip_agent, ppo_utils
from tf_agents.utils import common


def returns_and_advantages(rewards, discounts, episode_mask, values, td_lambda=None):
  """Returns and advantages of T transitions per row, batch-major.

  rewards, discounts: [B, T] of the step each transition leads to (discount already times
    gamma: 0 at a terminal, gamma at a time-limit end). episode_mask: [B, T], 0 where that
    step is LAST. values: [B, T + 1], V of each observation and of the one after the last.
  td_lambda: None for bootstrapped Monte Carlo returns (advantage = return - V), else
    GAE(lambda) advantages with TD(lambda) returns (advantage + V).
  """
  next_values = values[:, 1:]
  if td_lambda is None:
    # R_t = r_t + d_t (R_t+1 within the episode, V(s_t+1) at its end).
    def step(following, inputs):
      reward, discount, mask, next_value = inputs
      return reward + discount * (mask * following + (1.0 - mask) * next_value)

    elems = (rewards, discounts, episode_mask, next_values)
    returns = tf.scan(
      step, tf.nest.map_structure(tf.transpose, elems), initializer=values[:, -1], reverse=True
    )
    returns = tf.transpose(returns)
    return returns, returns - values[:, :-1]
  deltas = rewards + discounts * next_values - values[:, :-1]
  weights = discounts * episode_mask * td_lambda

  def gae(following, inputs):
    delta, weight = inputs
    return delta + weight * following

  advantages = tf.scan(
    gae, (tf.transpose(deltas), tf.transpose(weights)), initializer=tf.zeros_like(values[:, 0]), reverse=True
  )
  advantages = tf.transpose(advantages)
  return advantages + values[:, :-1], advantages


class PPOClipAgent(ppo_clip_agent.PPOClipAgent):
  """`PPOClipAgent` with `num_epochs` x `num_minibatches` updates per `train` call, in-graph.

  Expects `agent.preprocess_sequence(batch)` as `train`'s input (what the trainers pass).
  """

  def __init__(self, *args, num_epochs: int = 10, num_minibatches: int = 1, **kwargs):
    super().__init__(
      *args,
      num_epochs=1,
      compute_value_and_advantage_in_train=False,  # once per batch, in preprocess_sequence
      update_normalizers_in_train=False,  # once per batch, after all epochs
      **kwargs,
    )
    self._epochs = num_epochs
    self._num_minibatches = num_minibatches

  def compute_return_and_advantage(self, next_time_steps, value_preds):
    """Replaces `PPOAgent`'s: a time-limit end bootstraps from V(last observation)."""
    rewards = next_time_steps.reward
    if self._reward_normalizer:
      rewards = self._reward_normalizer.normalize(
        rewards, center_mean=False, clip_value=self._reward_norm_clipping
      )
    discounts = next_time_steps.discount * self._discount_factor
    return returns_and_advantages(
      rewards,
      discounts,
      common.get_episode_mask(next_time_steps),
      value_preds,
      td_lambda=self._lambda if self._use_gae else None,
    )

  def _train(self, experience, weights=None):
    # Indices of real transitions: not between episodes, not the bootstrap-only last step.
    valid = tf.reshape(ppo_utils.make_trajectory_mask(experience) > 0, [-1])
    indices = tf.cast(tf.where(valid)[:, 0], tf.int32)
    count = tf.size(indices)
    flat = tf.nest.map_structure(lambda t: tf.reshape(t, [-1, 1, *t.shape[2:]]), experience)
    size = count // self._num_minibatches
    updates = self._epochs * self._num_minibatches
    # One random order of the valid steps per epoch; minibatch m of an epoch is its m-th slice.
    order = tf.gather(indices, tf.argsort(tf.random.uniform([self._epochs, count]), axis=1))

    def update(k, loss):
      start = (k % self._num_minibatches) * size
      minibatch_indices = order[k // self._num_minibatches, start : start + size]
      minibatch = tf.nest.map_structure(lambda t: tf.gather(t, minibatch_indices), flat)
      return k + 1, super(PPOClipAgent, self)._train(minibatch, weights=None).loss

    _, loss = tf.while_loop(lambda k, _: k < updates, update, (tf.constant(0), tf.constant(0.0)))
    with tf.control_dependencies([loss]):
      real = tf.nest.map_structure(lambda t: tf.gather(t, indices), flat)  # [count, 1, ...]
      self.update_observation_normalizer(real.observation)
      self.update_reward_normalizer(real.reward)
      return tf_agent.LossInfo(tf.identity(loss), ())
