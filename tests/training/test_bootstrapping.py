"""Episode ends in every agent's targets: a time-limit end bootstraps, a terminal does not.

One fixed stretch of experience (below) goes through each agent built by its factory in
`pipelines.agents`, with networks whose outputs are read off the observations, and the
agent's TD errors or loss are compared with targets computed here by walking the episodes
forward, the way SB3 defines them: on a time-limit end (discount 1) add gamma * V(s_last)
and stop; on a terminal (discount 0) stop; never cross into the next episode. Each test
also checks that treating the time-limit end as a terminal would give a different answer,
so that the test can tell the two apart.
"""

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.agents.dqn import dqn_agent as tfa_dqn_agent
from tf_agents.networks import network
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipelines.agents import actor_critic, agents, networks
from pipelines.errors import PipelineError

F, M, L = (int(t) for t in (ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST))
GAMMA = 0.5  # far from 1, so that a missing or extra bootstrap term shows

# Episode A ends by time limit (step 2 -> LAST with discount 1), episode B by a terminal
# (step 5 -> LAST with discount 0), episode C by time limit at the last step (9). Steps 3
# and 6 lie between episodes (LAST -> FIRST, reward 0, action ignored by the environment).
STEP_TYPE = np.array([F, M, M, L, F, M, L, F, M, M], np.int32)
NEXT_STEP_TYPE = np.array([M, M, L, F, M, L, F, M, M, L], np.int32)
REWARD = np.array([1, 2, 3, 0, 4, 5, 0, 6, 7, 8], np.float32)
DISCOUNT = np.array([1, 1, 1, 1, 1, 0, 1, 1, 1, 1], np.float32)
ACTION = np.array([0, 1, 1, 0, 1, 0, 1, 1, 0, 1], np.int64)
T = len(STEP_TYPE)


def n_step(t: int, n: int, time_limit_is_terminal: bool = False):
  """(discounted reward sum, discount of the bootstrap, index of the bootstrap observation)
  of the transition at t over at most n steps; None for a step between episodes, and for
  a return that needs an observation past the end of the row."""
  if STEP_TYPE[t] == L:
    return None
  total, scale = 0.0, 1.0
  for j in range(t, t + n):
    total += scale * REWARD[j]
    scale *= GAMMA * DISCOUNT[j]
    if NEXT_STEP_TYPE[j] == L:
      if time_limit_is_terminal:
        scale = 0.0
      return (total, scale, j + 1) if j + 1 < T or scale == 0.0 else None
  return total, scale, t + n


def make_experience(observation, step=slice(None), action=ACTION) -> trajectory.Trajectory:
  """The fixed stretch (or a part of it) as a [1, T] batch."""
  fields = (STEP_TYPE, observation, action, (), NEXT_STEP_TYPE, REWARD, DISCOUNT)
  return trajectory.Trajectory(
    *(tf.nest.map_structure(lambda x: tf.constant(x[None, step]), field) for field in fields)
  )


def windows(observation, n: int, action=ACTION) -> trajectory.Trajectory:
  """Every window of n + 1 consecutive steps, as a replay sample of [T - n, n + 1] steps."""
  parts = [make_experience(observation, slice(t, t + n + 1), action) for t in range(T - n)]
  return tf.nest.map_structure(lambda *x: tf.concat(x, axis=0), *parts)


def specs(observation_size: int):
  observation_spec = tensor_spec.TensorSpec([observation_size], tf.float32)
  action_spec = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 1)
  return ts.time_step_spec(observation_spec), action_spec


def counters():
  return tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)


class ObservedValue(network.Network):
  """V(s) = scale * s[0] with scale 1: the test reads the values off the observations."""

  def __init__(self, input_tensor_spec, name="ObservedValue"):
    super().__init__(input_tensor_spec, state_spec=(), name=name)
    self._scale = tf.Variable(1.0, name="scale")

  def call(self, observation, step_type=None, network_state=(), training=False):
    return self._scale * observation[..., 0], network_state


class ObservedQ(network.Network):
  """Q(s, a) = scale * s[a] with scale 1 (a target copy computes the same)."""

  def __init__(self, input_tensor_spec, name="ObservedQ"):
    super().__init__(input_tensor_spec, state_spec=(), name=name)
    self._scale = tf.Variable(1.0, name="scale")

  def call(self, observation, step_type=None, network_state=(), training=False):
    return self._scale * observation, network_state


class ObservedCritic(network.Network):
  """Q(s, a) = scale * s[0] with scale 1, whatever the action: the test reads the values
  off the observations, so the targets do not depend on the actor's (noisy) next action."""

  def __init__(self, input_tensor_spec, name="ObservedCritic"):
    super().__init__(input_tensor_spec, state_spec=(), name=name)
    self._scale = tf.Variable(1.0, name="scale")

  def call(self, inputs, step_type=(), network_state=(), training=False):
    observation, action = inputs
    # 0 * a: a zero gradient for the actor rather than none (which the optimizers refuse).
    return self._scale * observation[..., 0] + 0.0 * tf.reduce_sum(action, -1), network_state


class ObservedLogits(network.Network):
  """C51 logits(s, a, atom) = scale * s[a * atoms + atom] with scale 1."""

  def __init__(self, input_tensor_spec, num_atoms: int, name="ObservedLogits"):
    super().__init__(input_tensor_spec, state_spec=(), name=name)
    self._num_atoms = num_atoms
    self._scale = tf.Variable(1.0, name="scale")

  @property
  def num_atoms(self) -> int:
    return self._num_atoms

  def call(self, observation, step_type=None, network_state=(), training=False):
    logits = tf.reshape(observation, [-1, observation.shape[-1] // self._num_atoms, self._num_atoms])
    return self._scale * logits, network_state


def assert_tells_time_limits_apart(actual, expected, expected_if_terminal, rtol=1e-5):
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-5)
  gap = np.max(np.abs(np.asarray(expected) - np.asarray(expected_if_terminal)))
  assert gap > 100 * (1e-5 + rtol * np.max(np.abs(expected))), "the fixture cannot tell the two apart"


def value_observations(size: int = 3) -> np.ndarray:
  """Observations whose first entry, the value, is large (10 + step) next to the rewards."""
  observation = np.random.default_rng(0).normal(size=(T, size)).astype(np.float32)
  observation[:, 0] = 10.0 + np.arange(T)
  return observation


def log_softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


class ActorProbe:
  """An actor-network factory that keeps the network, to read log pi(a_t | s_t) off it."""

  def __call__(self, observation_spec, action_spec):
    self.net = networks.actor_network(observation_spec, action_spec, fc_layer_params=(8,))
    return self.net

  def log_pi(self, observation) -> np.ndarray:
    distribution, _ = self.net(observation[None], step_type=STEP_TYPE[None], network_state=())
    log_pi = log_softmax(distribution.logits_parameter().numpy()[0])
    return log_pi[np.arange(T), ACTION]


def test_a2c_bootstraps_a_time_limit_from_the_last_observation():
  tf.random.set_seed(0)
  observation = value_observations()
  actor = ActorProbe()
  value_coef = 0.5
  agent = agents.a2c_agent(
    *specs(3),
    *counters(),
    actor_network_fn=actor,
    value_network_fn=ObservedValue,
    optimizer=tf.keras.optimizers.SGD(0.0),
    gamma=GAMMA,
    value_loss_coef=value_coef,
    entropy_coef=0.0,
    gradient_clipping=None,
  )
  log_pi = actor.log_pi(observation)
  value = observation[:, 0]

  def loss(time_limit_is_terminal):
    # The batch's last step only provides V(s_T): every return runs at most to it.
    terms = []
    for t in range(T - 1):
      target = n_step(t, T - 1 - t, time_limit_is_terminal)
      if target is not None:
        total, discount, index = target
        advantage = total + discount * value[index] - value[t]
        terms.append((-log_pi[t] * advantage, value_coef * advantage**2))
    return np.sum(np.mean(terms, axis=0))

  actual = agent.train(make_experience(observation)).loss.numpy()
  assert_tells_time_limits_apart(actual, loss(False), loss(True))


@pytest.mark.parametrize("baseline", [True, False], ids=["value_baseline", "no_baseline"])
def test_reinforce_returns_stop_at_episode_ends(baseline):
  """With a baseline a time-limit end bootstraps from V(s_last), and an episode whose
  s_last lies past the batch (C) is left out. Without a baseline there is nothing to
  bootstrap from: a time-limit end counts as a terminal (the documented deviation)."""
  tf.random.set_seed(0)
  observation = value_observations()
  actor = ActorProbe()
  value_coef = 0.2
  agent = agents.reinforce_agent(
    *specs(3),
    *counters(),
    actor_network_fn=actor,
    value_network_fn=ObservedValue if baseline else None,
    optimizer=tf.keras.optimizers.SGD(0.0),
    gamma=GAMMA,
    normalize_returns=False,  # a batch statistic, beside the point here
    value_estimation_loss_coef=value_coef,
  )
  log_pi = actor.log_pi(observation)
  value = observation[:, 0] if baseline else np.zeros(T, np.float32)

  def loss(time_limit_is_terminal):
    policy, value_error, episodes = 0.0, 0.0, 0
    for t in range(T):
      target = n_step(t, T - t, time_limit_is_terminal or not baseline)
      if target is None:
        continue
      total, discount, index = target
      episodes += NEXT_STEP_TYPE[t] == L
      ret = total + (discount * value[index] if discount else 0.0)
      policy -= log_pi[t] * (ret - value[t])
      value_error += (ret - value[t]) ** 2
    return (policy + (value_coef * value_error if baseline else 0.0)) / episodes

  actual = agent.train(make_experience(observation)).loss.numpy()
  if baseline:
    assert_tells_time_limits_apart(actual, loss(False), loss(True))
  else:
    np.testing.assert_allclose(actual, loss(True), rtol=1e-5)


@pytest.mark.parametrize("baseline", [True, False], ids=["value_baseline", "no_baseline"])
def test_reinforce_skips_a_batch_that_ends_no_episode(baseline):
  """TF-Agents' episode driver counts an episode at its boundary step, which can fall in the
  next batch: that batch may end no episode (seen with 4 CartPole copies, 2 episodes per
  batch). TF-Agents' ReinforceAgent then asserts and ends the run; here it makes no update."""
  agent = agents.reinforce_agent(
    *specs(3),
    *counters(),
    actor_network_fn=ActorProbe(),
    value_network_fn=ObservedValue if baseline else None,
    optimizer=tf.keras.optimizers.SGD(1.0),
  )
  before = [v.numpy().copy() for v in agent.trainable_variables]
  # Steps 3-4: the boundary after an episode, then the first step of a running one.
  loss = agent.train(make_experience(value_observations(), slice(3, 5))).loss
  assert float(loss) == 0.0 and int(agent.train_step_counter) == 0
  for old, variable in zip(before, agent.trainable_variables, strict=True):
    np.testing.assert_array_equal(old, variable.numpy())


@pytest.mark.parametrize("agent_class", [agents.DqnAgent, tfa_dqn_agent.DqnAgent, tfa_dqn_agent.DdqnAgent])
def test_dqn_targets_bootstrap_a_time_limit_and_skip_the_step_between_episodes(agent_class):
  q = np.random.default_rng(1).uniform(1.0, 5.0, size=(T, 2)).astype(np.float32)
  agent = agents.dqn_agent(
    *specs(2),
    *counters(),
    agent_class=agent_class,
    network_fn=lambda observation_spec, action_spec: ObservedQ(observation_spec),
    optimizer=tf.keras.optimizers.SGD(0.0),
    gamma=GAMMA,
  )

  def td_errors(time_limit_is_terminal):
    errors = np.zeros(T - 1, np.float32)
    for t in range(T - 1):
      target = n_step(t, 1, time_limit_is_terminal)
      if target is not None:  # the step between episodes has no TD error
        total, discount, index = target
        errors[t] = total + discount * q[index].max() - q[t, ACTION[t]]
    return errors

  actual = agent.train(windows(q, 1)).extra.td_error.numpy()
  assert_tells_time_limits_apart(actual, td_errors(False), td_errors(True))


def test_dqn_refuses_tf_agents_n_step_targets():
  class NStepDqnAgent(tfa_dqn_agent.DqnAgent):  # what `DqnAgent.n_step_update = 3` in gin does
    def __init__(self, *args, **kwargs):
      super().__init__(*args, n_step_update=3, **kwargs)

  with pytest.raises(PipelineError, match="n_step_update"):
    agents.dqn_agent(
      *specs(2),
      *counters(),
      agent_class=NStepDqnAgent,
      network_fn=lambda observation_spec, action_spec: ObservedQ(observation_spec),
      optimizer=tf.keras.optimizers.SGD(0.0),
    )


def project(support_values: np.ndarray, probabilities: np.ndarray, atoms: np.ndarray) -> np.ndarray:
  """C51's projection (Bellemare et al. 2017, Algorithm 1): each shifted atom's mass is
  split between the two nearest atoms of the support, in proportion to its closeness."""
  clipped = np.clip(support_values, atoms[0], atoms[-1])
  spacing = atoms[1] - atoms[0]
  closeness = np.clip(1.0 - np.abs(clipped[None, :] - atoms[:, None]) / spacing, 0.0, 1.0)
  return closeness @ probabilities


@pytest.mark.parametrize("n", [1, 3])
def test_c51_n_step_targets_stop_at_episode_ends(n):
  """With n = 3 the windows starting at steps 1 and 2 hold the time-limit end of episode A:
  TF-Agents' own loss would add episode B's reward and bootstrap from B's state."""
  num_atoms, atoms = 5, np.linspace(0.0, 4.0, 5).astype(np.float32)
  logits = np.random.default_rng(2).normal(scale=2.0, size=(T, 2, num_atoms)).astype(np.float32)
  agent = agents.c51_agent(
    *specs(2 * num_atoms),
    *counters(),
    network_fn=lambda observation_spec, action_spec: ObservedLogits(observation_spec, num_atoms),
    optimizer=tf.keras.optimizers.SGD(0.0),
    min_q_value=float(atoms[0]),
    max_q_value=float(atoms[-1]),
    n_step_update=n,
    gamma=GAMMA,
  )
  probabilities = np.exp(log_softmax(logits))

  def losses(time_limit_is_terminal):
    result = np.zeros(T - n, np.float32)
    for t in range(T - n):
      target = n_step(t, n, time_limit_is_terminal)
      if target is not None:  # a window starting between episodes teaches nothing
        total, discount, index = target
        greedy = np.argmax(probabilities[index] @ atoms)
        target_distribution = project(total + discount * atoms, probabilities[index, greedy], atoms)
        result[t] = -(target_distribution * log_softmax(logits[t, ACTION[t]])).sum()
    return result

  loss_info = agent.train(windows(logits.reshape(T, -1), n))
  # The loss averages over all windows, the masked ones counting as 0 (as `DqnAgent`'s does).
  assert_tells_time_limits_apart(loss_info.loss.numpy(), losses(False).mean(), losses(True).mean())
  assert_tells_time_limits_apart(loss_info.extra.td_loss.numpy(), losses(False), losses(True))


CONTINUOUS_ACTION = np.linspace(-1.0, 1.0, T, dtype=np.float32)[:, None]


def _observed_critic(observation_spec, action_spec):
  return ObservedCritic((observation_spec, action_spec))


def _small_actor(factory):
  return lambda observation_spec, action_spec: factory(observation_spec, action_spec, fc_layer_params=(8,))


# (factory, keyword arguments, critics in the loss, weight of the critic loss, its LossInfo field)
ACTOR_CRITICS = {
  "sac": (
    actor_critic.sac_agent,
    # exp(-50) ~ 2e-22: the entropy term of the target, alpha * log pi(a'|s'), vanishes.
    {"actor_network_fn": _small_actor(networks.tanh_normal_actor_network), "initial_log_alpha": -50.0},
    2,
    0.5,
  ),
  "td3": (
    actor_critic.td3_agent,
    {"actor_network_fn": _small_actor(networks.deterministic_actor_network)},
    2,
    1.0,
  ),
  "ddpg": (
    actor_critic.ddpg_agent,
    {"actor_network_fn": _small_actor(networks.deterministic_actor_network)},
    1,
    1.0,
  ),
}


@pytest.mark.parametrize("name", list(ACTOR_CRITICS))
def test_actor_critic_targets_bootstrap_a_time_limit_and_skip_the_step_between_episodes(name):
  """r + gamma * d * Q'(s', a') for each sampled pair: a time-limit end (d = 1) bootstraps from
  Q'(s_last, a'), a terminal (d = 0) does not, and the pair from one episode's LAST step to
  the next episode's FIRST is out of the loss (TF-Agents' own classes train on it)."""
  tf.random.set_seed(0)
  factory, kwargs, num_critics, weight = ACTOR_CRITICS[name]
  observation_spec = tensor_spec.TensorSpec([3], tf.float32)
  action_spec = tensor_spec.BoundedTensorSpec([1], tf.float32, -2.0, 2.0)
  agent = factory(
    ts.time_step_spec(observation_spec),
    action_spec,
    *counters(),
    critic_network_fn=_observed_critic,
    learning_rate=0.0,
    gamma=GAMMA,
    **kwargs,
  )
  observation = value_observations()
  value = observation[:, 0]

  def critic_loss(time_limit_is_terminal, mask_boundaries=True):
    losses = np.zeros(T - 1, np.float32)
    for t in range(T - 1):
      target = n_step(t, 1, time_limit_is_terminal)
      if target is None and mask_boundaries:
        continue
      total, discount, index = target or (REWARD[t], GAMMA * DISCOUNT[t], t + 1)
      losses[t] = num_critics * (total + discount * value[index] - value[t]) ** 2
    return weight * losses.mean()  # the masked pairs count as 0 in the batch mean

  actual = agent.train(windows(observation, 1, CONTINUOUS_ACTION)).extra.critic_loss.numpy()
  assert_tells_time_limits_apart(actual, critic_loss(False), critic_loss(True))
  assert_tells_time_limits_apart(actual, critic_loss(False), critic_loss(False, mask_boundaries=False))
