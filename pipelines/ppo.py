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
update, then updates the normalisers. The loss, the clipping, GAE and the per-minibatch
advantage standardisation are PPOClipAgent's, untouched.

After preprocessing every step carries its own return and advantage, so minibatches are
drawn over single steps (as in OpenAI baselines), reshaped to [steps, 1]. Feed-forward
networks only (an RNN policy needs whole sequences).
"""

from __future__ import annotations

import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.agents.ppo import ppo_clip_agent


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

  def _train(self, experience, weights=None):
    steps = tf.nest.flatten(experience)[0]
    count = tf.shape(steps)[0] * tf.shape(steps)[1]
    flat = tf.nest.map_structure(lambda t: tf.reshape(t, [-1, 1, *t.shape[2:]]), experience)
    size = count // self._num_minibatches
    updates = self._epochs * self._num_minibatches
    # One random order of all steps per epoch; minibatch m of an epoch is its m-th slice.
    order = tf.argsort(tf.random.uniform([self._epochs, count]), axis=1)

    def update(k, loss):
      start = (k % self._num_minibatches) * size
      indices = order[k // self._num_minibatches, start : start + size]
      minibatch = tf.nest.map_structure(lambda t: tf.gather(t, indices), flat)
      return k + 1, super(PPOClipAgent, self)._train(minibatch, weights=None).loss

    _, loss = tf.while_loop(lambda k, _: k < updates, update, (tf.constant(0), tf.constant(0.0)))
    with tf.control_dependencies([loss]):
      self.update_observation_normalizer(experience.observation)
      self.update_reward_normalizer(experience.reward)
      return tf_agent.LossInfo(tf.identity(loss), ())
