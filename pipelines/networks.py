"""Network factories, each a gin configurable taking specs and returning one network.

    pipelines-train --gin_file=gin/dqn_cartpole.gin \
        --gin_bindings='q_network.fc_layer_params=(128, 128)' --root_dir=runs/wide

Swap a whole factory with a binding such as `dqn_agent.network_fn = @my_network`.
Actor networks pick their output distribution from the action spec, as TF-Agents'
`ActorDistributionNetwork` does: integer actions get `discrete_projection` (categorical),
float actions get `continuous_projection` (Normal); either is a binding.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import tensorflow as tf
from tf_agents.networks import (
  actor_distribution_network,
  categorical_projection_network,
  normal_projection_network,
)
from tf_agents.networks import categorical_q_network as tfa_categorical_q_network
from tf_agents.networks import q_network as tfa_q_network
from tf_agents.networks import value_network as tfa_value_network
from tf_agents.specs import tensor_spec

gin.external_configurable(tf.keras.activations.relu, module="tf.keras.activations")
gin.external_configurable(tf.keras.activations.tanh, module="tf.keras.activations")


def _preprocessing(observation_spec, channels_first: bool) -> tf.keras.layers.Layer | None:
  """uint8 frames are stored as uint8 and divided by 255 inside the network; frame stacks
  arrive (stack, height, width) from the Atari environments and Conv2D wants channels last."""
  scale = observation_spec.dtype == tf.uint8
  if not scale and not channels_first:
    return None

  def preprocess(x):
    x = tf.cast(x, tf.float32) / 255.0 if scale else x
    return tf.transpose(x, [0, 2, 3, 1]) if channels_first else x

  return tf.keras.layers.Lambda(preprocess)


@gin.configurable
def q_network(
  observation_spec: tensor_spec.TensorSpec,
  action_spec: tensor_spec.BoundedTensorSpec,
  fc_layer_params: Sequence[int] = (64, 64),
  conv_layer_params: Sequence[tuple[int, int, int]] | None = None,
  channels_first: bool = False,
) -> tfa_q_network.QNetwork:
  """A Q-network: optional conv layers (filters, kernel, stride), then dense layers.

  channels_first: observations are (channels, height, width), e.g. stacked Atari frames.
  """
  return tfa_q_network.QNetwork(
    observation_spec,
    action_spec,
    preprocessing_layers=_preprocessing(observation_spec, channels_first),
    conv_layer_params=conv_layer_params,
    fc_layer_params=fc_layer_params,
  )


@gin.configurable
def categorical_q_network(
  observation_spec: tensor_spec.TensorSpec,
  action_spec: tensor_spec.BoundedTensorSpec,
  num_atoms: int = 51,
  fc_layer_params: Sequence[int] = (64, 64),
  conv_layer_params: Sequence[tuple[int, int, int]] | None = None,
) -> tfa_categorical_q_network.CategoricalQNetwork:
  """C51's network: `num_atoms` logits of the return distribution per action (Bellemare 2017)."""
  return tfa_categorical_q_network.CategoricalQNetwork(
    observation_spec,
    action_spec,
    num_atoms=num_atoms,
    preprocessing_layers=_preprocessing(observation_spec, channels_first=False),
    conv_layer_params=conv_layer_params,
    fc_layer_params=fc_layer_params,
  )


@gin.configurable
def categorical_projection(
  action_spec: tensor_spec.BoundedTensorSpec, logits_init_output_factor: float = 0.1
) -> categorical_projection_network.CategoricalProjectionNetwork:
  """Logits of a categorical distribution over discrete actions; small initial logits
  (factor 0.1) start the policy near uniform."""
  return categorical_projection_network.CategoricalProjectionNetwork(
    action_spec, logits_init_output_factor=logits_init_output_factor
  )


@gin.configurable
def normal_projection(
  action_spec: tensor_spec.BoundedTensorSpec,
  state_dependent_std: bool = False,
  init_means_output_factor: float = 0.1,
  std_bias_initializer_value: float = 0.0,
) -> normal_projection_network.NormalProjectionNetwork:
  """A Normal distribution per action dimension, its mean squashed into the action bounds.

  state_dependent_std: False learns one std per dimension, independent of the observation
    (as PPO does, Schulman et al. 2017); std = softplus(bias), so bias 0 starts at 0.69.
  """
  return normal_projection_network.NormalProjectionNetwork(
    action_spec,
    init_means_output_factor=init_means_output_factor,
    std_bias_initializer_value=std_bias_initializer_value,
    state_dependent_std=state_dependent_std,
  )


@gin.configurable
def actor_network(
  observation_spec: tensor_spec.TensorSpec,
  action_spec: tensor_spec.BoundedTensorSpec,
  fc_layer_params: Sequence[int] = (64, 64),
  activation_fn=tf.keras.activations.tanh,
  discrete_projection=categorical_projection,
  continuous_projection=normal_projection,
) -> actor_distribution_network.ActorDistributionNetwork:
  """A policy network: dense layers, then a distribution over actions.

  The projection follows the action spec: `discrete_projection` for integer actions,
  `continuous_projection` for float actions (each `action_spec -> network`).
  """
  return actor_distribution_network.ActorDistributionNetwork(
    observation_spec,
    action_spec,
    preprocessing_layers=_preprocessing(observation_spec, channels_first=False),
    fc_layer_params=fc_layer_params,
    activation_fn=activation_fn,
    discrete_projection_net=discrete_projection,
    continuous_projection_net=continuous_projection,
  )


@gin.configurable
def value_network(
  observation_spec: tensor_spec.TensorSpec,
  fc_layer_params: Sequence[int] = (64, 64),
  activation_fn=tf.keras.activations.tanh,
) -> tfa_value_network.ValueNetwork:
  """A state-value network V(s): dense layers, then one output."""
  return tfa_value_network.ValueNetwork(
    observation_spec,
    preprocessing_layers=_preprocessing(observation_spec, channels_first=False),
    fc_layer_params=fc_layer_params,
    activation_fn=activation_fn,
  )
