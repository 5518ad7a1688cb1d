"""REINFORCE whose baseline bootstraps a time-limit end: TF-Agents' `ReinforceAgent`, fixed.

    pipelines-train --gin_file=gin/reinforce_cartpole.gin --root_dir=runs/reinforce_baseline \
        --gin_bindings='reinforce_agent.value_network_fn = @value_network'

`ReinforceAgent._train` (TF-Agents 0.19) cuts every return at a step into a LAST step,
whatever its discount, so a time-limit end (discount 1) counts as a terminal. With a
learned baseline `ReinforceAgent` here adds gamma * d * V(s_last) to the reward of such a
step before the parent computes its returns, as SB3 does on a time-limit end
(`OnPolicyAlgorithm.collect_rollouts`): the return then stops there and bootstraps from
the last observation, and a terminal (d = 0) still does not. s_last is the observation of
the step between the two episodes, the next one in the batch. If a batch ends on a
time-limit end, s_last is not in it, and that episode is left out as incomplete, like
the partial episodes TF-Agents already masks at the end of a batch.

Without a baseline there is no value to bootstrap from, and a time-limit end stays a
terminal: the Monte Carlo return of the episode as played (Williams 1992; TF-Agents
does the same).

Both also leave the step between two episodes (LAST -> FIRST) out of every loss term:
TF-Agents masks it in the policy term only, so with a baseline V(s_last) learned gamma
times the next episode's return, and it is that value a time-limit end bootstraps from.
"""

from __future__ import annotations

import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.agents.reinforce import reinforce_agent
from tf_agents.trajectories import time_step as ts


class ReinforceAgent(reinforce_agent.ReinforceAgent):
  """`ReinforceAgent` whose returns bootstrap a time-limit end from the baseline, if any."""

  def _train(self, experience, weights=None):
    experience = self._as_trajectory(experience)
    between_episodes = tf.cast(experience.is_boundary(), tf.float32)
    weights = 1.0 - between_episodes if weights is None else weights * (1.0 - between_episodes)
    if self._value_network is not None:
      experience = self._bootstrap_time_limits(experience)
    # TF-Agents' episode driver counts an episode at its boundary step, which can fall in the
    # batch after the episode's last transition: a batch may then end no episode, and
    # `ReinforceAgent.total_loss` asserts. Such a batch has nothing to learn: no update.
    ended = tf.reduce_any(experience.is_last())
    return tf.cond(
      ended,
      lambda: super(ReinforceAgent, self)._train(experience, weights),
      lambda: self._no_update(),
    )

  def _no_update(self):
    zero = tf.constant(0.0)
    extra = reinforce_agent.ReinforceAgentLossInfo(zero, zero, zero, zero, zero)
    return tf_agent.LossInfo(zero, extra)

  def _bootstrap_time_limits(self, experience):
    """Adds gamma * d * V(s_last) to the reward of each time-limit end inside the batch, and
    marks one at the batch's end as not yet ended (masked: s_last is missing)."""
    values, _ = self._value_network(experience.observation, step_type=experience.step_type, training=False)
    ends = tf.equal(experience.next_step_type, ts.StepType.LAST)
    time_limit = ends & (experience.discount > 0)
    bootstrap = self._gamma * experience.discount[:, :-1] * tf.stop_gradient(values[:, 1:])
    bootstrap = tf.pad(tf.where(time_limit[:, :-1], bootstrap, 0.0), [[0, 0], [0, 1]])
    unbootstrapped = tf.pad(time_limit[:, -1:], [[0, 0], [tf.shape(ends)[1] - 1, 0]])
    next_step_type = tf.where(unbootstrapped, ts.StepType.MID, experience.next_step_type)
    return experience._replace(reward=experience.reward + bootstrap, next_step_type=next_step_type)
