"""SAC, TD3 and DDPG: the factories build, one binding swaps them, action spaces are checked.

    .venv/bin/python -m pytest -q tests/agents/test_actor_critic.py

Their critic targets at episode ends (a time limit bootstraps, a terminal does not, the
step between episodes is out) are tested with every agent's, in
tests/training/test_bootstrapping.py.
"""

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from pipelines import cli, configurables
from pipelines.agents import actor_critic

from conftest import REPO, train_here

AGENTS = {
  "sac": (actor_critic.sac_agent, actor_critic.SacAgent),
  "td3": (actor_critic.td3_agent, actor_critic.Td3Agent),
  "ddpg": (actor_critic.ddpg_agent, actor_critic.DdpgAgent),
}


@pytest.mark.parametrize("name", list(AGENTS))
def test_greedy_policy_repeats_itself_and_collection_explores_within_bounds(name):
  factory, agent_class = AGENTS[name]
  observation_spec = tensor_spec.TensorSpec([3], tf.float32)
  action_spec = tensor_spec.BoundedTensorSpec([1], tf.float32, -2.0, 2.0)
  counters = [tf.Variable(0, dtype=tf.int64) for _ in range(2)]
  agent = factory(ts.time_step_spec(observation_spec), action_spec, *counters)
  assert type(agent) is agent_class
  time_step = ts.restart(tf.constant(np.random.default_rng(0).normal(size=(64, 3)), tf.float32), 64)
  greedy = [agent.policy.action(time_step).action.numpy() for _ in range(2)]
  explored = agent.collect_policy.action(time_step).action.numpy()
  np.testing.assert_array_equal(greedy[0], greedy[1])  # evaluations play the mean action
  assert np.abs(explored - greedy[0]).max() > 1e-3  # collection adds noise (TD3, DDPG) or samples (SAC)
  for actions in (greedy[0], explored):
    assert actions.shape == (64, 1) and np.all(actions >= -2.0) and np.all(actions <= 2.0)


@pytest.mark.parametrize(
  "gin_file, agent_fn, agent_class",
  [
    ("gin/sac_pendulum.gin", "td3_agent", actor_critic.Td3Agent),
    ("gin/sac_pendulum.gin", "ddpg_agent", actor_critic.DdpgAgent),
    ("gin/td3_pendulum.gin", "sac_agent", actor_critic.SacAgent),
  ],
  ids=["sac-to-td3", "sac-to-ddpg", "td3-to-sac"],
)
def test_one_binding_swaps_the_agent(gin_file, agent_fn, agent_class):
  """As `dqn_agent.agent_class = @DdqnAgent` swaps DQN for Double DQN: environment, replay,
  trainer and critic bindings stay; the new agent's own settings are its factory's (SB3's)."""
  gin.clear_config()
  try:
    cli.parse_gin([str(REPO / gin_file)], [f"build_components.agent_fn = @{agent_fn}"])
    parts = configurables.experiment.build_components()
    assert type(parts.agent) is agent_class
    parts.close()
  finally:
    gin.clear_config()


@pytest.mark.parametrize(
  "gin_file, bindings, agent, needles",
  [
    (
      "gin/sac_pendulum.gin",
      ["gymnasium_env.env_id = 'CartPole-v1'"],
      "SacAgent",
      ("continuous", "CartPole-v1"),
    ),
    (
      "gin/td3_pendulum.gin",
      ["gymnasium_env.env_id = 'CartPole-v1'"],
      "Td3Agent",
      ("continuous", "CartPole-v1"),
    ),
    (
      "gin/ddpg_pendulum.gin",
      ["gymnasium_env.env_id = 'CartPole-v1'"],
      "DdpgAgent",
      ("continuous", "CartPole-v1"),
    ),
    (
      "gin/sac_pendulum.gin",
      ["build_components.agent_fn = @dqn_agent", "dqn_agent.optimizer = @tf.keras.optimizers.Adam()"],
      "DqnAgent",
      ("discrete", "Pendulum-v1"),
    ),
  ],
  ids=["sac-cartpole", "td3-cartpole", "ddpg-cartpole", "dqn-pendulum"],
)
def test_wrong_action_space_is_refused_in_one_line_at_start_up(tmp_path, gin_file, bindings, agent, needles):
  root = tmp_path / "run"
  result = train_here(root, gin_file=gin_file, bindings=bindings, toy=False)
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
  assert lines[-1].startswith("pipelines-train: error:"), result.stderr[-3000:]
  for needle in (agent, *needles):
    assert needle in lines[-1], lines[-1]
  assert not root.exists()  # refused before any work
