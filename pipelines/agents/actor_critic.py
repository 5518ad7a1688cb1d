"""Continuous-control actor-critics on the off-policy trainer: SAC, TD3 and DDPG.

    pipelines-train --gin_file=gin/sac_pendulum.gin --root_dir=runs/sac
    pipelines-train --gin_file=gin/td3_pendulum.gin --root_dir=runs/td3

TF-Agents' `SacAgent`, `Td3Agent` and `DdpgAgent`, built by factories with the signature of
every agent factory (`pipelines.agents.agents`), so one binding swaps them:
`build_components.agent_fn = @td3_agent` in a SAC experiment keeps its environment, replay,
trainer and network bindings and runs TD3 with the factory's defaults, which are SB3's.

Two changes to TF-Agents' classes, both about what the losses see:

* Boundary pairs are out of every loss. The replay samples pairs of consecutive steps,
  among them the pair from an episode's LAST step to the next episode's FIRST. TF-Agents'
  `DqnAgent` masks it (`valid_mask`); its SAC, TD3 and DDPG train on it ("TODO(b/124382524):
  Apply a loss mask or filter boundary transitions", ddpg_agent.py), which teaches
  Q(s_last, a) = gamma * V(next episode's first state): exactly the value a time-limit end
  bootstraps from. Here such a pair has weight 0 (the batch mean still divides by the whole
  batch, as `DqnAgent`'s does); SB3's buffer never holds one. A time-limit end (discount 1)
  bootstraps from Q(s_last, a'), a terminal (discount 0) does not.
* SAC's `policy`, the one evaluations and exports play, is the tanh-squashed mean (SB3's
  `deterministic=True`); TF-Agents' samples. Collection still samples.

Units: exploration and target-policy noise are in SB3's units, fractions of half the action
range (SB3 adds noise to actions scaled to [-1, 1]), so the RL Zoo's values apply as written;
the factories multiply by the half-range because TF-Agents adds noise in the action's own
units (Pendulum's torque: half-range 2).
"""

from __future__ import annotations

from collections.abc import Callable

import gin
import numpy as np
import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.agents.ddpg import ddpg_agent as tfa_ddpg_agent
from tf_agents.agents.sac import sac_agent as tfa_sac_agent
from tf_agents.agents.td3 import td3_agent as tfa_td3_agent
from tf_agents.policies import greedy_policy
from tf_agents.specs import tensor_spec
from tf_agents.utils import common

from pipelines.agents import networks
from pipelines.agents.agents import _build_optimizer, require_continuous_actions


class _WithinEpisodes:
  """Gives the boundary pair of each sampled [batch, 2] window weight 0 in every loss."""

  def _train(self, experience, weights=None):
    within = tf.cast(~experience.is_boundary()[:, 0], tf.float32)
    return super()._train(experience, within if weights is None else weights * within)


class SacAgent(_WithinEpisodes, tfa_sac_agent.SacAgent):
  """TF-Agents' `SacAgent`, boundary pairs masked, playing its mean action when greedy."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    # TFAgent keeps `policy` in `_policy` (no setter in 0.19).
    self._policy = greedy_policy.GreedyPolicy(self.collect_policy)


class Td3Agent(_WithinEpisodes, tfa_td3_agent.Td3Agent):
  """TF-Agents' `Td3Agent`, boundary pairs masked."""


class DdpgAgent(_WithinEpisodes, tfa_ddpg_agent.DdpgAgent):
  """TF-Agents' `DdpgAgent`, boundary pairs masked."""


def _half_range(action_spec: tensor_spec.BoundedTensorSpec) -> float:
  """SB3's unit of action noise in the action's own units: noise in [-1, 1] is scaled by it."""
  half = (np.broadcast_to(action_spec.maximum, action_spec.shape) - action_spec.minimum) / 2.0
  if not np.allclose(half, half.flat[0]):
    raise ValueError(f"action noise needs one range for every action dimension, got half-ranges {half}")
  return float(half.flat[0])


def _adam(learning_rate: float) -> tf.keras.optimizers.Optimizer:
  # One Adam per network with the same rate, as SB3 builds them; eps 1e-8 is PyTorch's.
  return tf.keras.optimizers.Adam(learning_rate, epsilon=1e-8)


@gin.configurable
def sac_agent(
  time_step_spec,
  action_spec,
  train_step: tf.Variable,
  env_step: tf.Variable,
  actor_network_fn: Callable = networks.tanh_normal_actor_network,
  critic_network_fn: Callable = networks.critic_network,
  learning_rate: float = 3e-4,
  gamma: float = 0.99,
  target_update_tau: float = 0.005,
  target_update_period: int = 1,
  initial_log_alpha: float = 0.0,
  target_entropy: float | None = None,
  gradient_clipping: float | None = None,
) -> tf_agent.TFAgent:
  """SAC (Haarnoja et al. 2018, with the learned temperature of arXiv:1812.05905): two
  critics and their Polyak-averaged targets, a tanh-squashed Normal actor.

  Defaults are SB3's SAC (stable_baselines3/sac/sac.py). learning_rate: Adam's, for actor,
  critics and temperature alike. gamma: discount per env step. target_update_tau: Polyak
  rate per target update; target_update_period: gradient steps between target updates.
  initial_log_alpha: log of the starting temperature (SB3's ent_coef 'auto': 1.0).
  target_entropy: nats; None is SB3's 'auto', -dim(A) (TF-Agents' own default is -dim(A)/2).
  """
  require_continuous_actions(action_spec, "SacAgent")
  if target_entropy is None:
    target_entropy = -float(action_spec.shape.num_elements())
  agent = SacAgent(
    time_step_spec,
    action_spec,
    critic_network=critic_network_fn(time_step_spec.observation, action_spec),
    actor_network=actor_network_fn(time_step_spec.observation, action_spec),
    actor_optimizer=_adam(learning_rate),
    critic_optimizer=_adam(learning_rate),
    alpha_optimizer=_adam(learning_rate),
    # SB3: 0.5 * sum over both critics of the mean squared TD error (TF-Agents' default 0.5).
    critic_loss_weight=0.5,
    td_errors_loss_fn=tf.math.squared_difference,
    target_update_tau=target_update_tau,
    target_update_period=target_update_period,
    gamma=gamma,
    initial_log_alpha=initial_log_alpha,
    target_entropy=target_entropy,
    gradient_clipping=gradient_clipping,
    train_step_counter=train_step,
  )
  agent.initialize()
  return agent


@gin.configurable
def td3_agent(
  time_step_spec,
  action_spec,
  train_step: tf.Variable,
  env_step: tf.Variable,
  actor_network_fn: Callable = networks.deterministic_actor_network,
  critic_network_fn: Callable = networks.critic_network,
  learning_rate: float = 1e-3,
  gamma: float = 0.99,
  target_update_tau: float = 0.005,
  policy_delay: int = 2,
  exploration_noise: float = 0.1,
  target_policy_noise: float = 0.2,
  target_noise_clip: float = 0.5,
  gradient_clipping: float | None = None,
) -> tf_agent.TFAgent:
  """TD3 (Fujimoto et al. 2018): twin critics, delayed actor and target updates, and
  clipped noise on the target action.

  Defaults are SB3's TD3 (stable_baselines3/td3/td3.py) and the RL Zoo's default Normal
  exploration noise. learning_rate: Adam's, for actor and critics. gamma: discount per env
  step. target_update_tau: Polyak rate. policy_delay: gradient steps per actor update, and
  per target update (SB3 updates the targets with the actor). exploration_noise,
  target_policy_noise, target_noise_clip: std and clip of Normal noise, in fractions of
  half the action range (module docstring).
  """
  require_continuous_actions(action_spec, "Td3Agent")
  half = _half_range(action_spec)
  actor = actor_network_fn(time_step_spec.observation, action_spec)
  critics = [critic_network_fn(time_step_spec.observation, action_spec) for _ in range(2)]
  actor_optimizer, critic_optimizer = _adam(learning_rate), _adam(learning_rate)
  agent = Td3Agent(
    time_step_spec,
    action_spec,
    actor_network=actor,
    critic_network=critics[0],
    critic_network_2=critics[1],
    actor_optimizer=actor_optimizer,
    critic_optimizer=critic_optimizer,
    exploration_noise_std=exploration_noise * half,
    target_update_tau=target_update_tau,
    target_update_period=policy_delay,
    actor_update_period=policy_delay,
    td_errors_loss_fn=common.element_wise_squared_loss,  # SB3's MSE; TF-Agents' default is Huber
    gamma=gamma,
    target_policy_noise=target_policy_noise * half,
    target_policy_noise_clip=target_noise_clip * half,
    gradient_clipping=gradient_clipping,
    train_step_counter=train_step,
  )
  agent.initialize()
  _build_optimizer(actor_optimizer, actor)
  _build_optimizer(critic_optimizer, *critics)
  return agent


@gin.configurable
def ddpg_agent(
  time_step_spec,
  action_spec,
  train_step: tf.Variable,
  env_step: tf.Variable,
  actor_network_fn: Callable = networks.deterministic_actor_network,
  critic_network_fn: Callable = networks.critic_network,
  learning_rate: float = 1e-3,
  gamma: float = 0.99,
  target_update_tau: float = 0.005,
  exploration_noise: float = 0.1,
  gradient_clipping: float | None = None,
) -> tf_agent.TFAgent:
  """DDPG (Lillicrap et al. 2016) as SB3 runs it (stable_baselines3/ddpg/ddpg.py: TD3 with
  one critic, no target-action noise, actor and targets updated every gradient step).

  exploration_noise: std of Normal noise in fractions of half the action range: TF-Agents'
  Ornstein-Uhlenbeck noise with damping 1 (x_next = N(0, std), no memory), which is SB3's
  NormalActionNoise. Other arguments as `td3_agent`.
  """
  require_continuous_actions(action_spec, "DdpgAgent")
  actor = actor_network_fn(time_step_spec.observation, action_spec)
  critic = critic_network_fn(time_step_spec.observation, action_spec)
  actor_optimizer, critic_optimizer = _adam(learning_rate), _adam(learning_rate)
  agent = DdpgAgent(
    time_step_spec,
    action_spec,
    actor_network=actor,
    critic_network=critic,
    actor_optimizer=actor_optimizer,
    critic_optimizer=critic_optimizer,
    ou_stddev=exploration_noise * _half_range(action_spec),
    ou_damping=1.0,
    target_update_tau=target_update_tau,
    target_update_period=1,
    td_errors_loss_fn=common.element_wise_squared_loss,  # SB3's MSE; TF-Agents' default is Huber
    gamma=gamma,
    gradient_clipping=gradient_clipping,
    train_step_counter=train_step,
  )
  agent.initialize()
  _build_optimizer(actor_optimizer, actor)
  _build_optimizer(critic_optimizer, critic)
  return agent
