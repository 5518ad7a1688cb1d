"""Replay: where collected trajectories wait to be sampled by the learner.

    pipelines-train --gin_file=gin/dqn_cartpole.gin \
        --gin_bindings='uniform_replay.capacity = 50_000' --root_dir=runs/small_replay

A replay factory takes the agent's `collect_data_spec` and the number of environment
copies and returns a TF-Agents `ReplayBuffer`; `make_dataset` turns it into the
prefetched `tf.data` pipeline the learner reads.
"""

from __future__ import annotations

import tensorflow as tf
from tf_agents.replay_buffers import replay_buffer, tf_uniform_replay_buffer

import gin


@gin.configurable
def uniform_replay(data_spec, num_envs: int, capacity: int = 100_000) -> replay_buffer.ReplayBuffer:
  """A `TFUniformReplayBuffer` holding `capacity` transitions in all (env steps)."""
  return tf_uniform_replay_buffer.TFUniformReplayBuffer(
    data_spec, batch_size=num_envs, max_length=max(capacity // num_envs, 1)
  )


@gin.configurable
def make_dataset(
  buffer: replay_buffer.ReplayBuffer,
  batch_size: int = 64,
  num_steps: int = 2,
  prefetch: int = 4,
) -> tf.data.Dataset:
  """Uniform samples of `num_steps` consecutive steps (2 for a one-step TD update)."""
  return buffer.as_dataset(sample_batch_size=batch_size, num_steps=num_steps, num_parallel_calls=2).prefetch(
    prefetch
  )
