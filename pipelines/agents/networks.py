"""Network factories, each a gin configurable taking specs and returning one network.

    pipelines-train --gin_file=gin/dqn_cartpole.gin \
        --gin_bindings='q_network.fc_layer_params=(128, 128)' --root_dir=runs/wide

Swap a whole factory with a binding such as `dqn_agent.network_fn = @my_network`.
Actor networks pick their output distribution from the action spec, as TF-Agents'
`ActorDistributionNetwork` does: integer actions get `discrete_projection` (categorical),
float actions get `continuous_projection` (Normal); either is a binding.

Continuous-control actor-critics (`pipelines.agents.actor_critic`): `critic_network` is
Q(s, a); SAC's actor is `tanh_normal_actor_network`, TD3's and DDPG's
`deterministic_actor_network`.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import numpy as np
import tensorflow as tf
from tf_agents.agents.ddpg import actor_network as tfa_actor_network
from tf_agents.agents.ddpg import critic_network as tfa_critic_network
from tf_agents.agents.sac import sac_agent as tfa_sac_agent
from tf_agents.agents.sac import tanh_normal_projection_network
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


class _FlatFloats(tf.keras.layers.Layer):
  """One part of a Dict or Tuple observation as float32 features: flattened, uint8 divided by
  255, integers (Discrete, MultiDiscrete, MultiBinary) as their values."""

  def __init__(self, size: int, scale: bool, **kwargs):
    super().__init__(**kwargs)
    self._size, self._scale = size, scale

  def call(self, x):
    x = tf.reshape(tf.cast(x, tf.float32), [-1, self._size])
    return x / 255.0 if self._scale else x

  def get_config(self):
    return {**super().get_config(), "size": self._size, "scale": self._scale}


def _preprocessing(observation_spec, channels_first: bool):
  """uint8 frames are stored as uint8 and divided by 255 inside the network; frame stacks
  arrive (stack, height, width) from the Atari environments and Conv2D wants channels last.
  A nested observation (gymnasium Dict or Tuple) gets one `_FlatFloats` per part, which
  `_combiner` concatenates: TF-Agents' encoding networks take a nest of preprocessing layers
  and a combiner for it."""
  if tf.nest.is_nested(observation_spec):
    return tf.nest.map_structure(
      lambda spec: _FlatFloats(int(np.prod(spec.shape)), spec.dtype == tf.uint8), observation_spec
    )
  scale = observation_spec.dtype == tf.uint8
  if not scale and not channels_first:
    return None

  def preprocess(x):
    x = tf.cast(x, tf.float32) / 255.0 if scale else x
    return tf.transpose(x, [0, 2, 3, 1]) if channels_first else x

  return tf.keras.layers.Lambda(preprocess)


def _combiner(observation_spec) -> tf.keras.layers.Layer | None:
  """Concatenates the parts of a nested observation's features; None for one array."""
  return tf.keras.layers.Concatenate(axis=-1) if tf.nest.is_nested(observation_spec) else None


class _SameConvolutions(tf.keras.layers.Layer):
  """Scaling, channels-last transpose and 'same'-padded ReLU convolutions, as one layer that
  TF-Agents can copy (it rebuilds preprocessing layers from their config)."""

  def __init__(self, conv_layer_params, scale: bool, channels_first: bool, **kwargs):
    super().__init__(**kwargs)
    self._params = [tuple(p) for p in conv_layer_params]
    self._scale, self._channels_first = scale, channels_first
    self._convs = [
      tf.keras.layers.Conv2D(filters, kernel, stride, padding="same", activation="relu")
      for filters, kernel, stride in self._params
    ]

  def call(self, x):
    x = tf.cast(x, tf.float32) / 255.0 if self._scale else x
    x = tf.transpose(x, [0, 2, 3, 1]) if self._channels_first else x
    for conv in self._convs:
      x = conv(x)
    return x

  def get_config(self):
    return {
      **super().get_config(),
      "conv_layer_params": self._params,
      "scale": self._scale,
      "channels_first": self._channels_first,
    }


@gin.configurable
def q_network(
  observation_spec: tensor_spec.TensorSpec,
  action_spec: tensor_spec.BoundedTensorSpec,
  fc_layer_params: Sequence[int] = (64, 64),
  conv_layer_params: Sequence[tuple[int, int, int]] | None = None,
  channels_first: bool = False,
  conv_padding: str = "valid",
  torch_init: bool = False,
  glorot_output: bool = False,
) -> tfa_q_network.QNetwork:
  """A Q-network: optional conv layers (filters, kernel, stride), then dense layers.

  channels_first: observations are (channels, height, width), e.g. stacked Atari frames.
  conv_padding: 'valid' (TF-Agents' and DeepMind's Nature CNN: 84 -> 20 -> 9 -> 7) or
    'same' (flax's default, so Dopamine's JAX NatureDQNNetwork: 84 -> 21 -> 11 -> 11).
  torch_init: PyTorch's default initialisation, which SB3's DQN keeps (its QNetwork adds no
    init of its own): kernels and biases uniform in +-1/sqrt(fan_in), instead of TF-Agents'
    Glorot layers and its output layer's uniform(+-0.03) kernel with bias -0.2.
  glorot_output: the output layer Glorot-uniform with zero bias like the others (Dopamine's
    JAX networks: xavier_uniform everywhere), instead of TF-Agents' uniform(+-0.03), -0.2.
  """
  if conv_padding not in ("valid", "same"):
    raise ValueError(f"q_network.conv_padding must be 'valid' or 'same', got {conv_padding!r}")
  preprocessing = _preprocessing(observation_spec, channels_first)
  if conv_layer_params and conv_padding == "same":
    # TF-Agents' EncodingNetwork builds 'valid' convolutions only: these go in front of it.
    scale = observation_spec.dtype == tf.uint8
    preprocessing = _SameConvolutions(tuple(map(tuple, conv_layer_params)), scale, channels_first)
    conv_layer_params = None
  net = tfa_q_network.QNetwork(
    observation_spec,
    action_spec,
    preprocessing_layers=preprocessing,
    preprocessing_combiner=_combiner(observation_spec),
    conv_layer_params=conv_layer_params,
    fc_layer_params=fc_layer_params,
  )
  if torch_init:
    net.create_variables()
    layer_types = (tf.keras.layers.Dense, tf.keras.layers.Conv2D)
    _torch_default([m for m in net.submodules if isinstance(m, layer_types)])
  if glorot_output:
    net.create_variables()
    output = net._q_value_layer  # TF-Agents' Q-value head (no public accessor in 0.19)
    output.kernel.assign(tf.keras.initializers.GlorotUniform()(output.kernel.shape))
    output.bias.assign(tf.zeros_like(output.bias))
  return net


def _torch_default(layers) -> None:
  """nn.Linear / nn.Conv2d `reset_parameters`: kaiming_uniform(a=sqrt(5)) on the kernel is
  uniform(+-1/sqrt(fan_in)), and the bias is drawn from the same range."""
  for layer in layers:
    fan_in = int(np.prod(layer.kernel.shape[:-1]))
    bound = 1.0 / np.sqrt(fan_in)
    layer.kernel.assign(tf.random.uniform(layer.kernel.shape, -bound, bound))
    if layer.bias is not None:
      layer.bias.assign(tf.random.uniform(layer.bias.shape, -bound, bound))


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
    preprocessing_combiner=_combiner(observation_spec),
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
  squash_mean: bool = True,
) -> normal_projection_network.NormalProjectionNetwork:
  """A Normal distribution per action dimension.

  state_dependent_std: False learns one std per dimension, independent of the observation
    (as PPO does, Schulman et al. 2017); std = softplus(bias), so bias 0 starts at 0.69.
  squash_mean: the mean is tanh-squashed into the action bounds (TF-Agents' default);
    False leaves it linear, as SB3's DiagGaussianDistribution does (the environment clips
    the sampled action).
  """
  return normal_projection_network.NormalProjectionNetwork(
    action_spec,
    init_means_output_factor=init_means_output_factor,
    std_bias_initializer_value=std_bias_initializer_value,
    state_dependent_std=state_dependent_std,
    mean_transform=normal_projection_network.tanh_squash_to_spec if squash_mean else None,
  )


# Gains of SB3's `ActorCriticPolicy` with `ortho_init=True` (its default, used by every RL
# Zoo PPO and A2C setting we cite): hidden layers sqrt(2), the action head 0.01 (a near-
# uniform, near-zero-mean first policy), the value head 1; biases 0.
HIDDEN_GAIN, POLICY_GAIN, VALUE_GAIN = 2**0.5, 0.01, 1.0


def _dense_layers(module: tf.Module) -> list[tf.keras.layers.Dense]:
  return [m for m in module.submodules if isinstance(m, tf.keras.layers.Dense)]


def _with_torch_init(net):
  """`net` with PyTorch's default initialisation on its dense layers (SB3's networks)."""
  net.create_variables()
  _torch_default(_dense_layers(net))
  return net


def _orthogonal(layers: Sequence[tf.keras.layers.Dense], gain: float) -> None:
  for layer in layers:
    layer.kernel.assign(tf.keras.initializers.Orthogonal(gain=gain)(layer.kernel.shape))
    if layer.bias is not None:
      layer.bias.assign(tf.zeros_like(layer.bias))


@gin.configurable
def actor_network(
  observation_spec: tensor_spec.TensorSpec,
  action_spec: tensor_spec.BoundedTensorSpec,
  fc_layer_params: Sequence[int] = (64, 64),
  activation_fn=tf.keras.activations.tanh,
  discrete_projection=categorical_projection,
  continuous_projection=normal_projection,
  orthogonal_init: bool = False,
) -> actor_distribution_network.ActorDistributionNetwork:
  """A policy network: dense layers, then a distribution over actions.

  The projection follows the action spec: `discrete_projection` for integer actions,
  `continuous_projection` for float actions (each `action_spec -> network`).
  orthogonal_init: SB3's initialisation (orthogonal kernels, gains sqrt(2) and 0.01 for the
    action head, zero biases) instead of TF-Agents' Glorot and scaled-variance heads.
  """
  net = actor_distribution_network.ActorDistributionNetwork(
    observation_spec,
    action_spec,
    preprocessing_layers=_preprocessing(observation_spec, channels_first=False),
    preprocessing_combiner=_combiner(observation_spec),
    fc_layer_params=fc_layer_params,
    activation_fn=activation_fn,
    discrete_projection_net=discrete_projection,
    continuous_projection_net=continuous_projection,
  )
  if orthogonal_init:
    net.create_variables()
    # TF-Agents keeps the action heads in `_projection_networks` (no public accessor in 0.19).
    heads = [layer for p in tf.nest.flatten(net._projection_networks) for layer in _dense_layers(p)]
    _orthogonal([layer for layer in _dense_layers(net) if all(layer is not h for h in heads)], HIDDEN_GAIN)
    _orthogonal(heads, POLICY_GAIN)
  return net


@gin.configurable
def value_network(
  observation_spec: tensor_spec.TensorSpec,
  fc_layer_params: Sequence[int] = (64, 64),
  activation_fn=tf.keras.activations.tanh,
  orthogonal_init: bool = False,
) -> tfa_value_network.ValueNetwork:
  """A state-value network V(s): dense layers, then one output.

  orthogonal_init: SB3's initialisation (orthogonal kernels, gains sqrt(2) and 1 for the
    output, zero biases) instead of TF-Agents' Glorot and uniform(+-0.03) output.
  """
  net = tfa_value_network.ValueNetwork(
    observation_spec,
    preprocessing_layers=_preprocessing(observation_spec, channels_first=False),
    preprocessing_combiner=_combiner(observation_spec),
    fc_layer_params=fc_layer_params,
    activation_fn=activation_fn,
  )
  if orthogonal_init:
    net.create_variables()
    output = net._postprocessing_layers  # TF-Agents' Dense(1) head (no public accessor in 0.19)
    _orthogonal([layer for layer in _dense_layers(net) if layer is not output], HIDDEN_GAIN)
    _orthogonal([output], VALUE_GAIN)
  return net


# SB3's SAC, TD3 and DDPG keep PyTorch's default nn.Linear init (their MLPs add none):
# `torch_init` below gives every dense layer that, instead of TF-Agents' small uniform(+-0.003)
# output layers.


@gin.configurable
def critic_network(
  observation_spec: tensor_spec.TensorSpec,
  action_spec: tensor_spec.BoundedTensorSpec,
  joint_fc_layer_params: Sequence[int] = (256, 256),
  activation_fn=tf.keras.activations.relu,
  torch_init: bool = False,
) -> tfa_critic_network.CriticNetwork:
  """Q(s, a) for continuous actions: observation and action concatenated, then dense
  layers and one output, as SB3's `ContinuousCritic` (SAC, TD3 and DDPG build theirs so).

  torch_init: PyTorch's default initialisation (uniform +-1/sqrt(fan_in) kernels and biases).
  """
  net = tfa_critic_network.CriticNetwork(
    (observation_spec, action_spec),
    joint_fc_layer_params=tuple(joint_fc_layer_params),
    activation_fn=activation_fn,
  )
  return _with_torch_init(net) if torch_init else net


@gin.configurable
def deterministic_actor_network(
  observation_spec: tensor_spec.TensorSpec,
  action_spec: tensor_spec.BoundedTensorSpec,
  fc_layer_params: Sequence[int] = (400, 300),
  activation_fn=tf.keras.activations.relu,
  torch_init: bool = False,
) -> tfa_actor_network.ActorNetwork:
  """TD3's and DDPG's actor: dense layers, then tanh scaled to the action bounds.
  fc_layer_params: SB3's TD3/DDPG default (400, 300), from Fujimoto et al. 2018."""
  net = tfa_actor_network.ActorNetwork(
    observation_spec,
    action_spec,
    fc_layer_params=tuple(fc_layer_params),
    activation_fn=activation_fn,
  )
  return _with_torch_init(net) if torch_init else net


@gin.configurable
def tanh_normal_actor_network(
  observation_spec: tensor_spec.TensorSpec,
  action_spec: tensor_spec.BoundedTensorSpec,
  fc_layer_params: Sequence[int] = (256, 256),
  activation_fn=tf.keras.activations.relu,
  torch_init: bool = False,
) -> actor_distribution_network.ActorDistributionNetwork:
  """SAC's actor: dense layers, then a tanh-squashed Normal with a state-dependent std
  whose log is clipped to [-20, 2] (SB3's LOG_STD_MIN/MAX; TF-Agents' `std_clip_transform`).
  fc_layer_params: SB3's SAC default (256, 256)."""

  def projection(spec):
    return tanh_normal_projection_network.TanhNormalProjectionNetwork(
      spec, std_transform=tfa_sac_agent.std_clip_transform
    )

  net = actor_distribution_network.ActorDistributionNetwork(
    observation_spec,
    action_spec,
    fc_layer_params=tuple(fc_layer_params),
    activation_fn=activation_fn,
    continuous_projection_net=projection,
  )
  return _with_torch_init(net) if torch_init else net
