"""Agent factories: `(time_step_spec, action_spec, train_step, env_step) -> TFAgent`.

    pipelines-train --gin_file=gin/dqn_cartpole.gin --root_dir=runs/dqn

Each factory is a gin configurable; an experiment picks one with
`build_components.agent_fn = @dqn_agent`. `train_step` counts gradient updates and
`env_step` counts environment steps (the unit of every schedule users write down).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.agents.dqn import dqn_agent as tfa_dqn_agent
from tf_agents.specs import tensor_spec
from tf_agents.utils import common

import gin
from pipelines import networks
from pipelines.errors import PipelineError

gin.external_configurable(tf.keras.optimizers.Adam, module="tf.keras.optimizers")
gin.external_configurable(tf.keras.optimizers.RMSprop, module="tf.keras.optimizers")
gin.external_configurable(tf.keras.optimizers.legacy.RMSprop, module="tf.keras.optimizers.legacy")
gin.external_configurable(common.element_wise_huber_loss, module="tf_agents.common")
gin.external_configurable(common.element_wise_squared_loss, module="tf_agents.common")


class ActionSpaceError(PipelineError):
  """The agent cannot act in the environment's action space."""


def require_discrete_actions(action_spec: tensor_spec.BoundedTensorSpec, agent: str) -> None:
  if not action_spec.dtype.is_integer or action_spec.shape.num_elements() != 1:
    raise ActionSpaceError(
      f"{agent} needs a single discrete action, but the action space is "
      f"{action_spec.dtype.name} of shape {tuple(action_spec.shape)} "
      f"in [{action_spec.minimum}, {action_spec.maximum}]"
    )


@gin.configurable
def linear_schedule(
  counter: tf.Variable, start: float = 1.0, end: float = 0.05, duration: int = 10_000, delay: int = 0
) -> Callable[[], tf.Tensor]:
  """A value moving linearly from `start` to `end` over `duration` counts of `counter`,
  starting after `delay` counts (e.g. the random steps before learning starts)."""

  def value() -> tf.Tensor:
    elapsed = tf.maximum(tf.cast(counter, tf.float32) - float(delay), 0.0)
    fraction = tf.minimum(elapsed / float(max(duration, 1)), 1.0)
    return start + fraction * (end - start)

  return value


@gin.configurable
def dqn_agent(
  time_step_spec,
  action_spec,
  train_step: tf.Variable,
  env_step: tf.Variable,
  agent_class: type = tfa_dqn_agent.DqnAgent,
  network_fn: Callable = networks.q_network,
  optimizer: tf.keras.optimizers.Optimizer = gin.REQUIRED,
  epsilon_schedule: Callable = linear_schedule,
  target_update_period: int = 100,
  target_update_tau: float = 1.0,
  gamma: float = 0.99,
  reward_scale_factor: float = 1.0,
  td_errors_loss_fn: Callable = common.element_wise_huber_loss,
  gradient_clipping: float | None = None,
) -> tf_agent.TFAgent:
  """DQN (Mnih et al. 2015) or a subclass such as `DdqnAgent` via `agent_class`.

  target_update_period: gradient steps between target-network updates.
  epsilon_schedule: called with the environment-step counter; its duration is env steps.
  """
  require_discrete_actions(action_spec, agent_class.__name__)
  agent = agent_class(
    time_step_spec,
    action_spec,
    q_network=network_fn(time_step_spec.observation, action_spec),
    optimizer=optimizer,
    epsilon_greedy=epsilon_schedule(env_step),
    target_update_period=target_update_period,
    target_update_tau=target_update_tau,
    gamma=gamma,
    reward_scale_factor=reward_scale_factor,
    td_errors_loss_fn=td_errors_loss_fn,
    gradient_clipping=gradient_clipping,
    train_step_counter=train_step,
  )
  agent.initialize()
  return agent
