"""The LunarLander gin files hold every RL Baselines3 Zoo value they cite (hyperparams/dqn.yml,
ppo.yml, LunarLander-v2) and the SB3 defaults those run with: changing one fails.

    .venv/bin/python -m pytest -q tests/experiments/test_box2d_protocols.py

No learning test: the Zoo's budgets (DQN 100k, PPO 1M env steps) take minutes to hours here,
far past CI's ~60 s; scripts/bench_lunarlander.py measures them (docs/results/lunarlander.md).
"""

import gin
import pytest

from pipelines import cli, configurables  # noqa: F401 registers the configurables

from conftest import REPO

# name -> the Zoo's / SB3's value, in this pipeline's units (env steps summed over copies).
LUNARLANDER = {
  "gymnasium_env.env_id": "LunarLander-v3",  # the Zoo's LunarLander-v2, renamed by gymnasium 1.0
}
DQN_LUNARLANDER = {
  **LUNARLANDER,
  "collect/make_environment.num_envs": 1,  # n_envs (the Zoo's default)
  "run_experiment.num_env_steps": 100_000,  # n_timesteps
  "tf.keras.optimizers.Adam.learning_rate": 6.3e-4,  # learning_rate
  "make_dataset.batch_size": 128,  # batch_size
  "uniform_replay.capacity": 50_000,  # buffer_size
  "OffPolicyTrainer.initial_collect_steps": 0,  # learning_starts
  "dqn_agent.gamma": 0.99,  # gamma
  "OffPolicyTrainer.collect_steps_per_iteration": 4,  # train_freq
  "OffPolicyTrainer.train_steps_per_iteration": 4,  # gradient_steps -1: one per env step collected
  "dqn_agent.target_update_period": 250,  # target_update_interval 250 env steps, 1 gradient step each
  "dqn_agent.target_update_tau": 1.0,  # tau (SB3 default)
  "dqn_agent.td_errors_loss_fn": "@tf_agents.common.element_wise_huber_loss",  # SB3's smooth_l1_loss
  "linear_schedule.start": 1.0,  # exploration_initial_eps (SB3 default)
  "linear_schedule.end": 0.1,  # exploration_final_eps
  "linear_schedule.duration": 12_000,  # exploration_fraction 0.12 x n_timesteps 1e5
  "q_network.fc_layer_params": (256, 256),  # net_arch
  "q_network.torch_init": True,  # SB3's QNetwork keeps nn.Linear's init
}
PPO_LUNARLANDER = {
  **LUNARLANDER,
  "collect/make_environment.num_envs": 16,  # n_envs
  "OnPolicyTrainer.collect_per_iteration": 16 * 1_024,  # n_envs x n_steps
  "run_experiment.num_env_steps": 1_000_000,  # n_timesteps
  "ppo_agent.num_epochs": 4,  # n_epochs
  "ppo_agent.num_minibatches": 16 * 1_024 // 64,  # batch_size 64
  "ppo_agent.discount_factor": 0.999,  # gamma
  "ppo_agent.lambda_value": 0.98,  # gae_lambda
  "ppo_agent.use_gae": True,
  "ppo_agent.entropy_regularization": 0.01,  # ent_coef
  "ppo_agent.importance_ratio_clipping": 0.2,  # clip_range (SB3 default)
  "tf.keras.optimizers.Adam.learning_rate": 3e-4,  # learning_rate (SB3 default)
  "tf.keras.optimizers.Adam.epsilon": 1e-5,  # SB3 ActorCriticPolicy's Adam
  "ppo_agent.value_pred_loss_coef": 0.5,  # vf_coef (SB3 default)
  "ppo_agent.gradient_clipping": 0.5,  # max_grad_norm (SB3 default)
  "ppo_agent.normalize_observations": False,  # no `normalize`
  "ppo_agent.normalize_rewards": False,
  "actor_network.fc_layer_params": (64, 64),  # SB3's MlpPolicy net_arch
  "value_network.fc_layer_params": (64, 64),
  "actor_network.orthogonal_init": True,  # ortho_init (SB3 default)
  "value_network.orthogonal_init": True,
}
TABLES = {
  "gin/dqn_lunarlander.gin": DQN_LUNARLANDER,
  "gin/ppo_lunarlander.gin": PPO_LUNARLANDER,
}


def _check(table: dict) -> None:
  """Every value of `table` as the parsed gin config holds it."""
  for name, expected in table.items():
    actual = gin.query_parameter(name)
    if isinstance(actual, gin.config.ConfigurableReference):
      actual = str(actual)  # '@name', as the gin file writes it
    if isinstance(expected, float):
      assert actual == pytest.approx(expected), (name, actual)
    else:
      assert actual == expected, (name, actual)


def _changed(expected) -> str:
  """A gin literal for another value of the same kind."""
  if isinstance(expected, bool):
    return repr(not expected)
  if isinstance(expected, tuple):
    return repr(expected + (1,))
  if isinstance(expected, str) and expected.startswith("@"):
    return "@tf_agents.common.element_wise_squared_loss"
  if isinstance(expected, str):
    return repr(expected.replace("v3", "v2"))
  return repr(expected * 2 + 1)


@pytest.mark.parametrize("gin_file", list(TABLES))
def test_gin_file_holds_the_zoo_values_it_cites(gin_file):
  gin.clear_config()
  cli.parse_gin([str(REPO / gin_file)], [])
  _check(TABLES[gin_file])


@pytest.mark.parametrize("gin_file", list(TABLES))
def test_changing_any_cited_value_fails_the_check(gin_file):
  for name, expected in TABLES[gin_file].items():
    gin.clear_config()
    cli.parse_gin([str(REPO / gin_file)], [f"{name} = {_changed(expected)}"])
    with pytest.raises(AssertionError):
      _check(TABLES[gin_file])


def test_dqn_target_sync_and_exploration_are_the_zoos_env_steps():
  """SB3 counts target_update_interval and exploration_fraction in env steps; this file's
  target period is in gradient steps, equal only at one gradient step per env step."""
  gin.clear_config()
  cli.parse_gin([str(REPO / "gin/dqn_lunarlander.gin")], [])
  per_env_step = gin.query_parameter("OffPolicyTrainer.train_steps_per_iteration") / gin.query_parameter(
    "OffPolicyTrainer.collect_steps_per_iteration"
  )
  assert gin.query_parameter("dqn_agent.target_update_period") / per_env_step == 250
  budget = gin.query_parameter("run_experiment.num_env_steps")
  assert gin.query_parameter("linear_schedule.duration") == pytest.approx(0.12 * budget)
