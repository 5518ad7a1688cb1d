"""Network factories: SB3's initialisation when asked for, and the Normal head's mean.

.venv/bin/python -m pytest -q tests/agents/test_networks.py
"""

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec

from pipelines.agents import networks

OBSERVATION = tensor_spec.TensorSpec([4], tf.float32)
DISCRETE = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 1)
CONTINUOUS = tensor_spec.BoundedTensorSpec([1], tf.float32, -2.0, 2.0)


def _singular_values(layer):
  return np.linalg.svd(layer.kernel.numpy(), compute_uv=False)


@pytest.mark.parametrize("action_spec", [DISCRETE, CONTINUOUS], ids=["categorical", "normal"])
def test_orthogonal_init_has_sb3_gains(action_spec):
  """SB3's ActorCriticPolicy(ortho_init=True): orthogonal kernels (all singular values equal
  the gain), sqrt(2) for hidden layers, 0.01 for the action head, 1 for the value head."""
  actor = networks.actor_network(OBSERVATION, action_spec, fc_layer_params=(8, 8), orthogonal_init=True)
  value = networks.value_network(OBSERVATION, fc_layer_params=(8, 8), orthogonal_init=True)
  heads = networks._dense_layers(actor._projection_networks)
  assert len(heads) == 1
  for layer in networks._dense_layers(actor):
    expected = networks.POLICY_GAIN if layer is heads[0] else networks.HIDDEN_GAIN
    np.testing.assert_allclose(_singular_values(layer), expected, rtol=1e-4)
    assert not layer.bias.numpy().any()
  for layer in networks._dense_layers(value):
    expected = networks.VALUE_GAIN if layer.units == 1 else networks.HIDDEN_GAIN
    np.testing.assert_allclose(_singular_values(layer), expected, rtol=1e-4)


def test_default_init_is_tf_agents_own():
  actor = networks.actor_network(OBSERVATION, DISCRETE, fc_layer_params=(8, 8))
  actor.create_variables()
  hidden = networks._dense_layers(actor)[0]
  assert not np.allclose(_singular_values(hidden), networks.HIDDEN_GAIN, rtol=1e-2)


@pytest.mark.parametrize("squash", [True, False])
def test_normal_mean_is_linear_unless_squashed(squash):
  """SB3's Gaussian mean is the head's linear output (the environment clips the action);
  TF-Agents' default squashes it into the action bounds with tanh."""
  actor = networks.actor_network(
    OBSERVATION,
    CONTINUOUS,
    fc_layer_params=(),
    continuous_projection=lambda spec: networks.normal_projection(spec, squash_mean=squash),
  )
  actor.create_variables()
  means = networks._dense_layers(actor._projection_networks)[0]
  means.kernel.assign(tf.fill(means.kernel.shape, 10.0))  # a mean far outside [-2, 2]
  distribution, _ = actor(tf.ones([1, 4]), step_type=(), network_state=())
  mean = float(distribution.mean()[0, 0])
  assert (abs(mean) <= 2.0) == squash, mean


def test_torch_init_is_uniform_in_one_over_sqrt_fan_in():
  """SB3's DQN keeps PyTorch's nn.Linear init: kernel and bias in +-1/sqrt(fan_in)."""
  tf.random.set_seed(0)
  net = networks.q_network(OBSERVATION, DISCRETE, fc_layer_params=(256, 256), torch_init=True)
  layers = networks._dense_layers(net)
  assert sorted(layer.kernel.shape[0] for layer in layers) == [4, 256, 256]
  for layer in layers:
    bound = 1.0 / np.sqrt(layer.kernel.shape[0])
    for values in (layer.kernel.numpy(), layer.bias.numpy()):
      assert np.abs(values).max() <= bound
      if values.size >= 256:  # enough draws to come near the bound
        assert np.abs(values).max() > 0.9 * bound
  default = networks.q_network(OBSERVATION, DISCRETE, fc_layer_params=(256, 256))
  default.create_variables()
  output = [layer for layer in networks._dense_layers(default) if layer.units == 2]
  np.testing.assert_allclose(output[0].bias.numpy(), -0.2)  # TF-Agents' own


def test_dopamine_nature_cnn_pads_same_and_initialises_its_output_like_the_rest():
  """Dopamine's NatureDQNNetwork (flax nn.Conv, padding 'same' by default): 84 -> 21 -> 11
  -> 11, so 11 x 11 x 64 = 7,744 inputs to the 512-unit layer; DeepMind's 'valid' one: 7 x 7
  x 64 = 3,136. Its output layer is xavier-uniform with zero bias, not TF-Agents' -0.2."""
  frames = tensor_spec.BoundedTensorSpec((4, 84, 84), tf.uint8, 0, 255)
  actions = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 3)
  convs = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
  for padding, inputs in (("same", 11 * 11 * 64), ("valid", 7 * 7 * 64)):
    net = networks.q_network(
      frames, actions, (512,), convs, channels_first=True, conv_padding=padding, glorot_output=True
    )
    q_values, _ = net(tf.zeros([2, 4, 84, 84], tf.uint8))
    assert q_values.shape == (2, 4)
    dense = [layer for layer in networks._dense_layers(net) if layer.units == 512]
    assert dense[0].kernel.shape == (inputs, 512), padding
    output = [layer for layer in networks._dense_layers(net) if layer.units == 4][0]
    assert not output.bias.numpy().any()
    bound = (6 / (512 + 4)) ** 0.5  # Glorot uniform
    assert 0.5 * bound < np.abs(output.kernel.numpy()).max() <= bound


@pytest.mark.parametrize(
  "factory, layers, fan_ins",
  [
    (networks.critic_network, {"joint_fc_layer_params": (256, 256)}, [4 + 1, 256, 256]),  # [s, a] in
    (networks.deterministic_actor_network, {"fc_layer_params": (400, 300)}, [4, 300, 400]),
    (networks.tanh_normal_actor_network, {"fc_layer_params": (256, 256)}, [4, 256, 256]),
  ],
  ids=["critic", "deterministic_actor", "tanh_normal_actor"],
)
def test_actor_critic_networks_take_torch_init_on_every_layer(factory, layers, fan_ins):
  """SB3's SAC, TD3 and DDPG MLPs keep nn.Linear's init, output layers included (TF-Agents'
  own output layers are uniform(+-0.003))."""
  tf.random.set_seed(0)
  net = factory(OBSERVATION, CONTINUOUS, torch_init=True, **layers)
  dense = networks._dense_layers(net)
  assert sorted(layer.kernel.shape[0] for layer in dense) == sorted(fan_ins)
  for layer in dense:
    bound = 1.0 / np.sqrt(layer.kernel.shape[0])
    assert np.abs(layer.kernel.numpy()).max() <= bound
    assert np.abs(layer.kernel.numpy()).max() > 0.5 * bound  # not TF-Agents' +-0.003 output
