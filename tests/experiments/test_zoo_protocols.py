"""The CartPole, Pendulum and HalfCheetah gin files hold every RL Baselines3 Zoo value they
cite (hyperparams/dqn.yml, ppo.yml, sac.yml, td3.yml, ddpg.yml) and the SB3 defaults those
run with: changing one fails.

    .venv/bin/python -m pytest -q tests/experiments/test_zoo_protocols.py
"""

import math

import gin
import pytest

from pipelines import cli, configurables  # noqa: F401 registers the configurables

from conftest import REPO


def _check(table: dict) -> None:
  """Every value of `table` as the parsed gin config holds it."""
  for name, expected in table.items():
    actual = gin.query_parameter(name)
    if isinstance(expected, float):
      assert actual == pytest.approx(expected), (name, actual)
    else:
      assert actual == expected, (name, actual)


# name -> the Zoo's / SB3's value, in this pipeline's units (env steps summed over copies).
DQN_CARTPOLE = {
  "tf.keras.optimizers.Adam.learning_rate": 2.3e-3,  # learning_rate
  "make_dataset.batch_size": 64,  # batch_size
  "uniform_replay.capacity": 100_000,  # buffer_size
  "OffPolicyTrainer.initial_collect_steps": 1_000,  # learning_starts
  "dqn_agent.gamma": 0.99,  # gamma
  "linear_schedule.start": 1.0,
  "linear_schedule.end": 0.04,  # exploration_final_eps
  "linear_schedule.duration": 8_000,  # exploration_fraction 0.16 x n_timesteps 5e4
  "q_network.fc_layer_params": (256, 256),  # net_arch
  "q_network.torch_init": True,  # SB3's QNetwork keeps nn.Linear's init
}
PPO_CARTPOLE = {
  "collect/make_environment.num_envs": 8,  # n_envs
  "OnPolicyTrainer.collect_per_iteration": 8 * 32,  # n_envs x n_steps
  "ppo_agent.num_epochs": 20,  # n_epochs
  "ppo_agent.num_minibatches": 1,  # batch_size 256 = the whole batch
  "ppo_agent.discount_factor": 0.98,  # gamma
  "ppo_agent.lambda_value": 0.8,  # gae_lambda
  "ppo_agent.importance_ratio_clipping": 0.2,  # clip_range (lin_0.2 at its start)
  "tf.keras.optimizers.Adam.learning_rate": 1e-3,  # learning_rate (lin_0.001 at its start)
  "tf.keras.optimizers.Adam.epsilon": 1e-5,  # SB3 ActorCriticPolicy's Adam
  "ppo_agent.entropy_regularization": 0.0,  # ent_coef
  "ppo_agent.value_pred_loss_coef": 0.5,  # vf_coef (SB3 default)
  "ppo_agent.gradient_clipping": 0.5,  # max_grad_norm (SB3 default)
  "ppo_agent.normalize_observations": False,  # no `normalize`
  "ppo_agent.normalize_rewards": False,
  "actor_network.orthogonal_init": True,  # ortho_init (SB3 default)
  "value_network.orthogonal_init": True,
}
PPO_PENDULUM = {
  "collect/make_environment.num_envs": 4,  # n_envs
  "OnPolicyTrainer.collect_per_iteration": 4 * 1_024,  # n_envs x n_steps
  "run_experiment.num_env_steps": 100_000,  # n_timesteps
  "ppo_agent.num_epochs": 10,  # n_epochs
  "ppo_agent.num_minibatches": 4 * 1_024 // 64,  # SB3's default batch_size 64
  "ppo_agent.discount_factor": 0.9,  # gamma
  "ppo_agent.lambda_value": 0.95,  # gae_lambda
  "ppo_agent.importance_ratio_clipping": 0.2,  # clip_range
  "tf.keras.optimizers.Adam.learning_rate": 1e-3,  # learning_rate
  "tf.keras.optimizers.Adam.epsilon": 1e-5,
  "ppo_agent.entropy_regularization": 0.0,  # ent_coef
  "ppo_agent.value_pred_loss_coef": 0.5,
  "ppo_agent.gradient_clipping": 0.5,
  "ppo_agent.normalize_observations": False,  # no `normalize` in the Zoo's Pendulum-v1
  "ppo_agent.normalize_rewards": False,
  "actor_network.orthogonal_init": True,
  "value_network.orthogonal_init": True,
  "normal_projection.std_bias_initializer_value": math.log(math.e - 1),  # std 1: log_std_init 0
  "normal_projection.squash_mean": False,
}
# Off-policy actor-critics: one env copy, one gradient step per env step (train_freq 1,
# gradient_steps 1), PyTorch's default init (SB3's MLPs add none).
SB3_OFF_POLICY = {
  "collect/make_environment.num_envs": 1,  # n_envs (the Zoo's default)
  "OffPolicyTrainer.collect_steps_per_iteration": 1,  # train_freq, env steps
  "OffPolicyTrainer.train_steps_per_iteration": 1,  # gradient_steps
  "make_dataset.batch_size": 256,  # batch_size (SB3 default; the Zoo's HalfCheetah TD3 too)
  "critic_network.torch_init": True,
}
SAC = {  # SB3 SAC defaults the Zoo's entries keep
  **SB3_OFF_POLICY,
  "sac_agent.gamma": 0.99,  # gamma
  "sac_agent.target_update_tau": 0.005,  # tau
  "sac_agent.target_update_period": 1,  # target_update_interval
  "sac_agent.initial_log_alpha": 0.0,  # ent_coef 'auto': starts at 1.0
  "uniform_replay.capacity": 1_000_000,  # buffer_size
  "tanh_normal_actor_network.fc_layer_params": (256, 256),  # net_arch
  "critic_network.joint_fc_layer_params": (256, 256),
  "tanh_normal_actor_network.torch_init": True,
}
SAC_PENDULUM = {
  **SAC,
  "run_experiment.num_env_steps": 20_000,  # n_timesteps
  "sac_agent.learning_rate": 1e-3,  # learning_rate
  "OffPolicyTrainer.initial_collect_steps": 100,  # learning_starts (SB3 default)
  "sac_agent.target_entropy": -1.0,  # target_entropy 'auto': -dim(A)
}
SAC_HALFCHEETAH = {
  **SAC,
  "run_experiment.num_env_steps": 1_000_000,  # n_timesteps
  "sac_agent.learning_rate": 3e-4,  # learning_rate (SB3 default)
  "OffPolicyTrainer.initial_collect_steps": 10_000,  # learning_starts
  "sac_agent.target_entropy": -6.0,  # target_entropy 'auto': -dim(A)
}
TD3 = {  # the Zoo's TD3 entries and the SB3 TD3 defaults they keep
  **SB3_OFF_POLICY,
  "td3_agent.learning_rate": 1e-3,  # learning_rate
  "td3_agent.target_update_tau": 0.005,  # tau
  "td3_agent.policy_delay": 2,  # policy_delay
  "td3_agent.exploration_noise": 0.1,  # noise_type 'normal', noise_std
  "td3_agent.target_policy_noise": 0.2,  # target_policy_noise
  "td3_agent.target_noise_clip": 0.5,  # target_noise_clip
  "OffPolicyTrainer.initial_collect_steps": 10_000,  # learning_starts
  "deterministic_actor_network.fc_layer_params": (400, 300),  # net_arch
  "critic_network.joint_fc_layer_params": (400, 300),
  "deterministic_actor_network.torch_init": True,
}
TD3_PENDULUM = {
  **TD3,
  "run_experiment.num_env_steps": 20_000,  # n_timesteps
  "td3_agent.gamma": 0.98,  # gamma
  "uniform_replay.capacity": 200_000,  # buffer_size
}
TD3_HALFCHEETAH = {
  **TD3,
  "run_experiment.num_env_steps": 1_000_000,  # n_timesteps
  "td3_agent.gamma": 0.99,  # gamma (SB3 default)
  "uniform_replay.capacity": 1_000_000,  # buffer_size (SB3 default)
}
DDPG_PENDULUM = {  # ddpg.yml's Pendulum-v1 holds td3.yml's values; SB3's DDPG is TD3 without its tricks
  **{k: v for k, v in TD3_PENDULUM.items() if not k.startswith("td3_agent.")},
  "ddpg_agent.learning_rate": 1e-3,  # learning_rate
  "ddpg_agent.gamma": 0.98,  # gamma
  "ddpg_agent.target_update_tau": 0.005,  # tau
  "ddpg_agent.exploration_noise": 0.1,  # noise_type 'normal', noise_std
}
TABLES = {
  "gin/dqn_cartpole.gin": DQN_CARTPOLE,
  "gin/ppo_cartpole.gin": PPO_CARTPOLE,
  "gin/ppo_pendulum.gin": PPO_PENDULUM,
  "gin/sac_pendulum.gin": SAC_PENDULUM,
  "gin/td3_pendulum.gin": TD3_PENDULUM,
  "gin/ddpg_pendulum.gin": DDPG_PENDULUM,
  "gin/sac_halfcheetah.gin": SAC_HALFCHEETAH,
  "gin/td3_halfcheetah.gin": TD3_HALFCHEETAH,
}
# Which agent each file runs and on what: a swapped agent or environment fails here.
AGENTS = {
  "gin/sac_pendulum.gin": ("sac_agent", "Pendulum-v1"),
  "gin/td3_pendulum.gin": ("td3_agent", "Pendulum-v1"),
  "gin/ddpg_pendulum.gin": ("ddpg_agent", "Pendulum-v1"),
  "gin/sac_halfcheetah.gin": ("sac_agent", "HalfCheetah-v5"),
  "gin/td3_halfcheetah.gin": ("td3_agent", "HalfCheetah-v5"),
}


@pytest.mark.parametrize("gin_file", list(TABLES))
def test_gin_file_holds_the_zoo_values_it_cites(gin_file):
  gin.clear_config()
  cli.parse_gin([str(REPO / gin_file)], [])
  _check(TABLES[gin_file])


@pytest.mark.parametrize("gin_file", list(TABLES))
def test_changing_any_cited_value_fails_the_check(gin_file):
  for name, expected in TABLES[gin_file].items():
    changed = (
      (not expected)
      if isinstance(expected, bool)
      else expected + (1,)
      if isinstance(expected, tuple)
      else expected * 2 + 1
      if expected != -1
      else -2.0  # -1 is 2x + 1's fixed point (SAC's target entropy on Pendulum)
    )
    gin.clear_config()
    cli.parse_gin([str(REPO / gin_file)], [f"{name} = {changed!r}"])
    with pytest.raises(AssertionError):
      _check(TABLES[gin_file])


@pytest.mark.parametrize("gin_file", list(AGENTS))
def test_actor_critic_file_runs_its_agent_on_its_environment(gin_file):
  gin.clear_config()
  cli.parse_gin([str(REPO / gin_file)], [])
  agent, env_id = AGENTS[gin_file]
  assert gin.query_parameter("build_components.agent_fn").selector == agent
  assert gin.query_parameter("build_components.trainer_fn").selector == "OffPolicyTrainer"
  assert gin.query_parameter("gymnasium_env.env_id") == env_id
