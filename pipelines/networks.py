"""Network factories, each a gin configurable taking specs and returning one network.

    pipelines-train --gin_file=gin/dqn_cartpole.gin \
        --gin_bindings='q_network.fc_layer_params=(128, 128)' --root_dir=runs/wide

Swap a whole factory with a binding such as `dqn_agent.network_fn = @my_network`.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
from tf_agents.networks import q_network as tfa_q_network
from tf_agents.specs import tensor_spec

import gin


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
