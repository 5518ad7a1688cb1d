"""Collection: drivers step the environments with a policy and feed observers.

    pipelines-train --gin_file=gin/dqn_cartpole.gin \
        --gin_bindings='collect/make_environment.num_envs = 8' --root_dir=runs/eight_envs

Observers are the replay buffer's `add_batch` and the training metrics below; the
drivers are TF-Agents' own, run inside compiled graphs by the trainers in
`pipelines.learning`.
"""

from __future__ import annotations

import dataclasses

import gin
from tf_agents.drivers import dynamic_episode_driver, dynamic_step_driver
from tf_agents.metrics import tf_metrics


@dataclasses.dataclass
class TrainingMetrics:
  """TF-Agents metrics observed during collection; `env_steps` is the users' x-axis."""

  env_steps: tf_metrics.EnvironmentSteps
  episodes: tf_metrics.NumberOfEpisodes
  average_return: tf_metrics.AverageReturnMetric
  average_episode_length: tf_metrics.AverageEpisodeLengthMetric

  @classmethod
  def create(cls, num_envs: int, window: int = 10) -> TrainingMetrics:
    return cls(
      env_steps=tf_metrics.EnvironmentSteps(),
      episodes=tf_metrics.NumberOfEpisodes(),
      average_return=tf_metrics.AverageReturnMetric(batch_size=num_envs, buffer_size=window),
      average_episode_length=tf_metrics.AverageEpisodeLengthMetric(batch_size=num_envs, buffer_size=window),
    )

  @property
  def observers(self) -> list:
    return [getattr(self, f.name) for f in dataclasses.fields(self)]


@gin.configurable
def step_driver(tf_env, policy, observers, num_steps: int) -> dynamic_step_driver.DynamicStepDriver:
  """Takes `num_steps` environment steps in all, summed over the batched copies."""
  return dynamic_step_driver.DynamicStepDriver(tf_env, policy, observers=observers, num_steps=num_steps)


@gin.configurable
def episode_driver(
  tf_env, policy, observers, num_episodes: int
) -> dynamic_episode_driver.DynamicEpisodeDriver:
  """Runs until `num_episodes` episodes have ended, summed over the batched copies."""
  return dynamic_episode_driver.DynamicEpisodeDriver(
    tf_env, policy, observers=observers, num_episodes=num_episodes
  )
