"""Agent factories: `(time_step_spec, action_spec, train_step, env_step) -> TFAgent`.

    pipelines-train --gin_file=gin/dqn_cartpole.gin --root_dir=runs/dqn

Each factory is a gin configurable; an experiment picks one with
`build_components.agent_fn = @dqn_agent`. `train_step` counts gradient updates and
`env_step` counts environment steps (the unit of every schedule users write down).

Off-policy (`OffPolicyTrainer`): `dqn_agent` (DQN, or Double DQN with
`dqn_agent.agent_class = @DdqnAgent`), `c51_agent`. On-policy (`OnPolicyTrainer`):
`ppo_agent`, `a2c_agent`, `reinforce_agent`. SAC, TD3 and DDPG (continuous actions,
off-policy) are in `pipelines.agents.actor_critic`. Agents check the action spec first
(`require_discrete_actions`, `require_continuous_actions`), so a mismatch fails at start-up
with one line.
"""

from __future__ import annotations

from collections.abc import Callable

import gin
import numpy as np
import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.agents.dqn import dqn_agent as tfa_dqn_agent
from tf_agents.specs import tensor_spec
from tf_agents.utils import common

from pipelines.agents import a2c, c51, networks, ppo, reinforce
from pipelines.errors import PipelineError

gin.external_configurable(tf.keras.optimizers.Adam, module="tf.keras.optimizers")
gin.external_configurable(tf.keras.optimizers.RMSprop, module="tf.keras.optimizers")
gin.external_configurable(tf.keras.optimizers.legacy.RMSprop, module="tf.keras.optimizers.legacy")
# TF-Agents registers its agent classes with gin itself: `dqn_agent.agent_class = @DdqnAgent`.
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


def require_continuous_actions(action_spec: tensor_spec.BoundedTensorSpec, agent: str) -> None:
  """A float vector of actions with finite bounds: the actors squash into them with tanh."""
  bounded = action_spec.dtype.is_floating and np.all(np.isfinite([action_spec.minimum, action_spec.maximum]))
  if not bounded or action_spec.shape.rank != 1:
    raise ActionSpaceError(
      f"{agent} needs continuous actions (a bounded float vector), but the action space is "
      f"{action_spec.dtype.name} of shape {tuple(action_spec.shape)} "
      f"in [{action_spec.minimum}, {action_spec.maximum}]"
    )


def _build_optimizer(optimizer: tf.keras.optimizers.Optimizer, *nets) -> None:
  """Creates the optimizer's slot variables now: created inside the trainer's first
  tf.function trace, they would make TensorFlow trace the whole loop a second time.
  (Legacy Keras optimizers have no `build` and keep that cost.)"""
  if hasattr(optimizer, "build"):
    optimizer.build([v for net in nets for v in net.trainable_variables])


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


class DqnAgent(tfa_dqn_agent.DqnAgent):
  """TF-Agents' `DqnAgent` whose target max(Q_target(s')) takes one target-network pass.

  `DqnAgent._compute_next_q_values` runs the target network, then its greedy policy, which
  runs the same network again to find the argmax: a second Nature-CNN forward per update
  (about 5-13% of the update on this CPU without XLA, `scripts/bench_atari.py
  --update_variants`). The max of the first pass is the same number. With an action
  constraint the parent's path (the greedy policy honours the mask) is kept.
  """

  def _compute_next_q_values(self, next_time_steps, info):
    if self._observation_and_action_constraint_splitter is not None:
      return super()._compute_next_q_values(next_time_steps, info)
    next_target_q_values, _ = self._target_q_network(
      next_time_steps.observation, step_type=next_time_steps.step_type
    )
    return tf.reduce_max(next_target_q_values, axis=-1)


@gin.configurable
def dqn_agent(
  time_step_spec,
  action_spec,
  train_step: tf.Variable,
  env_step: tf.Variable,
  agent_class: type = DqnAgent,
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
  """DQN (Mnih et al. 2015) or a subclass such as `DdqnAgent` via `agent_class`: one-step
  TD targets r + gamma * d * max Q(s'), so a time-limit end (d = 1) bootstraps from its last
  observation and a terminal (d = 0) does not.

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
  # A gin binding such as `DqnAgent.n_step_update = 3` reaches the class past this factory.
  # TF-Agents' n-step DQN targets (`trajectory.to_n_step_transition`) run on past a
  # time-limit end into the next episode; `c51_agent` has n-step targets that stop there.
  if agent.train_sequence_length not in (None, 2):
    raise PipelineError(
      f"{agent_class.__name__} with n_step_update > 1 is refused: TF-Agents' n-step targets sum "
      "rewards across the end of an episode; use c51_agent(n_step_update=...) for n-step targets"
    )
  agent.initialize()
  return agent


@gin.configurable
def c51_agent(
  time_step_spec,
  action_spec,
  train_step: tf.Variable,
  env_step: tf.Variable,
  network_fn: Callable = networks.categorical_q_network,
  optimizer: tf.keras.optimizers.Optimizer = gin.REQUIRED,
  epsilon_schedule: Callable = linear_schedule,
  min_q_value: float = 0.0,
  max_q_value: float = 100.0,
  n_step_update: int = 1,
  target_update_period: int = 100,
  target_update_tau: float = 1.0,
  gamma: float = 0.99,
  gradient_clipping: float | None = None,
) -> tf_agent.TFAgent:
  """C51 (Bellemare et al. 2017): a categorical return distribution on fixed atoms.

  min_q_value, max_q_value: support of the distribution, in return units (CartPole with
    gamma 0.99: returns lie in [0, 100]).
  n_step_update: env steps per TD target (the dataset must sample n_step_update + 1 steps);
    a target stops at the first episode end in its window (`pipelines.c51`).
  target_update_period: gradient steps between target-network updates.
  """
  require_discrete_actions(action_spec, "CategoricalDqnAgent")
  agent = c51.C51Agent(
    time_step_spec,
    action_spec,
    categorical_q_network=network_fn(time_step_spec.observation, action_spec),
    optimizer=optimizer,
    min_q_value=min_q_value,
    max_q_value=max_q_value,
    n_step_update=n_step_update,
    epsilon_greedy=epsilon_schedule(env_step),
    target_update_period=target_update_period,
    target_update_tau=target_update_tau,
    gamma=gamma,
    gradient_clipping=gradient_clipping,
    train_step_counter=train_step,
  )
  agent.initialize()
  return agent


@gin.configurable
def ppo_agent(
  time_step_spec,
  action_spec,
  train_step: tf.Variable,
  env_step: tf.Variable,
  actor_network_fn: Callable = networks.actor_network,
  value_network_fn: Callable = networks.value_network,
  optimizer: tf.keras.optimizers.Optimizer = gin.REQUIRED,
  num_epochs: int = 10,
  num_minibatches: int = 1,
  importance_ratio_clipping: float = 0.2,
  discount_factor: float = 0.99,
  use_gae: bool = True,
  lambda_value: float = 0.95,
  entropy_regularization: float = 0.0,
  value_pred_loss_coef: float = 0.5,
  normalize_observations: bool = True,
  normalize_rewards: bool = True,
  gradient_clipping: float | None = 0.5,
) -> tf_agent.TFAgent:
  """PPO with the clipped surrogate objective (Schulman et al. 2017), `PPOClipAgent`.

  num_epochs: passes over each collected batch; num_minibatches: gradient steps per pass,
    each on a random 1/num_minibatches of the batch's env steps (`pipelines.ppo`).
  importance_ratio_clipping: epsilon of the clipped ratio.
  use_gae, lambda_value: GAE(lambda) advantages; the value target is then the TD(lambda)
    return, as in OpenAI baselines.
  normalize_observations, normalize_rewards: the agent's streaming normalisers (their
    state lives in the agent, so checkpoints carry it).
  """
  actor_net = actor_network_fn(time_step_spec.observation, action_spec)
  value_net = value_network_fn(time_step_spec.observation)
  agent = ppo.PPOClipAgent(
    time_step_spec,
    action_spec,
    optimizer=optimizer,
    actor_net=actor_net,
    value_net=value_net,
    num_epochs=num_epochs,
    num_minibatches=num_minibatches,
    importance_ratio_clipping=importance_ratio_clipping,
    discount_factor=discount_factor,
    use_gae=use_gae,
    use_td_lambda_return=use_gae,
    lambda_value=lambda_value,
    entropy_regularization=entropy_regularization,
    value_pred_loss_coef=value_pred_loss_coef,
    normalize_observations=normalize_observations,
    normalize_rewards=normalize_rewards,
    gradient_clipping=gradient_clipping,
    train_step_counter=train_step,
  )
  _build_optimizer(optimizer, actor_net, value_net)
  return agent


@gin.configurable
def a2c_agent(
  time_step_spec,
  action_spec,
  train_step: tf.Variable,
  env_step: tf.Variable,
  actor_network_fn: Callable = networks.actor_network,
  value_network_fn: Callable = networks.value_network,
  optimizer: tf.keras.optimizers.Optimizer | None = None,
  gamma: float = 0.99,
  value_loss_coef: float = 0.5,
  entropy_coef: float = 0.01,
  gradient_clipping: float | None = 0.5,
) -> tf_agent.TFAgent:
  """A2C (Mnih et al. 2016, synchronous): n-step returns over each collected batch.

  optimizer: None gives A2C's own, RMSprop(7e-4, rho 0.99, epsilon 1e-5) as in OpenAI
    baselines, so `build_components.agent_fn = @a2c_agent` alone turns a PPO experiment
    into A2C. gamma: discount per env step. See `pipelines.a2c` for the loss.
  """
  actor_net = actor_network_fn(time_step_spec.observation, action_spec)
  value_net = value_network_fn(time_step_spec.observation)
  optimizer = optimizer or tf.keras.optimizers.RMSprop(7e-4, rho=0.99, epsilon=1e-5)
  agent = a2c.A2CAgent(
    time_step_spec,
    action_spec,
    actor_net=actor_net,
    value_net=value_net,
    optimizer=optimizer,
    gamma=gamma,
    value_loss_coef=value_loss_coef,
    entropy_coef=entropy_coef,
    gradient_clipping=gradient_clipping,
    train_step_counter=train_step,
  )
  _build_optimizer(optimizer, actor_net, value_net)
  return agent


@gin.configurable
def reinforce_agent(
  time_step_spec,
  action_spec,
  train_step: tf.Variable,
  env_step: tf.Variable,
  actor_network_fn: Callable = networks.actor_network,
  value_network_fn: Callable | None = None,
  optimizer: tf.keras.optimizers.Optimizer = gin.REQUIRED,
  gamma: float = 0.99,
  normalize_returns: bool = True,
  value_estimation_loss_coef: float = 0.2,
  entropy_regularization: float | None = None,
  gradient_clipping: float | None = None,
) -> tf_agent.TFAgent:
  """REINFORCE (Williams 1992), `ReinforceAgent`: Monte Carlo returns of whole episodes.

  value_network_fn: None for plain REINFORCE; `@value_network` adds a learned baseline
    (advantage = return - V(s)), trained with weight `value_estimation_loss_coef`. With a
    baseline a time-limit end bootstraps from V(s_last); without one it counts as a
    terminal, there being no value to bootstrap from (`pipelines.reinforce`).
  normalize_returns: standardise the returns (or advantages) over each batch.
  """
  actor_net = actor_network_fn(time_step_spec.observation, action_spec)
  value_net = value_network_fn(time_step_spec.observation) if value_network_fn else None
  agent = reinforce.ReinforceAgent(
    time_step_spec,
    action_spec,
    actor_network=actor_net,
    value_network=value_net,
    optimizer=optimizer,
    gamma=gamma,
    normalize_returns=normalize_returns,
    value_estimation_loss_coef=value_estimation_loss_coef,
    entropy_regularization=entropy_regularization,
    gradient_clipping=gradient_clipping,
    train_step_counter=train_step,
  )
  if value_net is not None:
    value_net.create_variables(time_step_spec.observation)
  _build_optimizer(optimizer, actor_net, *([value_net] if value_net else []))
  return agent
