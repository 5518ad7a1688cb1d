"""Agents: every swap the README shows runs at toy scale (in-process: the run, not the CLI, is under
test), and an agent that cannot act in the action space is refused at start-up with one line."""

import json

import pytest

from pipelines.storage import run_folder as rf

from conftest import train_here

# On-policy toy scale: small batches, so the few hundred toy env steps are a few iterations.
ON_POLICY_TOY = ["OnPolicyTrainer.collect_per_iteration = 64", "ppo_agent.num_epochs = 2"]

# The swaps shown in the README: (gin file, the README's bindings, extra toy-scale bindings).
README_SWAPS = {
  "dqn-to-double-dqn": ("gin/dqn_cartpole.gin", ["dqn_agent.agent_class = @DdqnAgent"], []),
  "ppo-to-a2c": ("gin/ppo_cartpole.gin", ["build_components.agent_fn = @a2c_agent"], ON_POLICY_TOY),
  "ppo-network-size": (
    "gin/ppo_cartpole.gin",
    ["actor_network.fc_layer_params = (128, 128)", "value_network.fc_layer_params = (128,)"],
    ON_POLICY_TOY,
  ),
  "reinforce-value-baseline": (
    "gin/reinforce_cartpole.gin",
    ["reinforce_agent.value_network_fn = @value_network"],
    ["OnPolicyTrainer.collect_per_iteration = 2"],  # episodes
  ),
  "ppo-parallel-envs": (
    "gin/ppo_cartpole.gin",
    ["collect/make_environment.parallel = True", "collect/make_environment.num_envs = 4"],
    ON_POLICY_TOY,
  ),
  "ppo-pendulum": ("gin/ppo_pendulum.gin", [], ["OnPolicyTrainer.collect_per_iteration = 128"]),
}


@pytest.mark.parametrize("swap", README_SWAPS, ids=list(README_SWAPS))
def test_readme_swap_runs_at_toy_scale(tmp_path, swap):
  gin_file, bindings, toy_bindings = README_SWAPS[swap]
  root = tmp_path / "run"
  result = train_here(root, gin_file=gin_file, bindings=[*bindings, *toy_bindings])
  assert result.returncode == 0, result.stderr[-3000:]
  final = json.loads(result.stdout.split("Final evaluation: ")[1].splitlines()[0])
  assert final["env_steps"] >= 400 and final["num_episodes"] == 2
  config = (root / rf.OPERATIVE_CONFIG).read_text()
  for binding in bindings:  # each README binding reached the experiment
    name, value = (part.strip() for part in binding.split("=", 1))
    assert f"{name} = {value}" in config, binding


@pytest.mark.parametrize(
  "gin_file, bindings, agent",
  [
    (
      "gin/ppo_pendulum.gin",
      [
        "build_components.agent_fn = @dqn_agent",
        "build_components.trainer_fn = @OffPolicyTrainer",
        "dqn_agent.optimizer = @tf.keras.optimizers.Adam()",
      ],
      "DqnAgent",
    ),
    ("gin/c51_cartpole.gin", ["gymnasium_env.env_id = 'Pendulum-v1'"], "CategoricalDqnAgent"),
  ],
  ids=["dqn", "c51"],
)
def test_discrete_agent_on_pendulum_is_refused_at_start_up(tmp_path, gin_file, bindings, agent):
  root = tmp_path / "run"
  result = train_here(root, gin_file=gin_file, bindings=bindings, toy=False)
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
  assert lines[-1].startswith("pipelines-train: error:"), result.stderr[-3000:]
  for needle in (agent, "discrete", "Pendulum-v1"):
    assert needle in lines[-1], lines[-1]
  assert not root.exists()  # refused before any work


def test_on_policy_trainer_collects_trains_and_clears():
  import gin

  from pipelines import cli, configurables

  gin.clear_config()
  try:
    cli.parse_gin(
      ["gin/ppo_cartpole.gin"],
      [
        "OnPolicyTrainer.collect_per_iteration = 64",
        "ppo_agent.num_epochs = 3",
        "ppo_agent.num_minibatches = 2",
      ],
    )
    parts = configurables.experiment.build_components()
    trainer = parts.trainer
    assert trainer.env_steps_per_iteration == 64 and trainer.checkpoint_items() == {}
    trainer.initialize()
    trainer.run(2)
    assert int(trainer.replay.num_frames()) == 0  # cleared after training
    assert int(parts.train_step) == 2 * 3 * 2  # iterations x epochs x minibatches
    assert int(parts.metrics.env_steps.result()) >= 2 * 64 - 8  # boundary steps are not counted
    parts.close()
  finally:
    gin.clear_config()
