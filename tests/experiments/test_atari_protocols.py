"""Atari protocols: each gin file holds its cited table, both Atari paths play the same game.

/work/main/.venv/bin/python -m pytest -q tests/experiments/test_atari_protocols.py

The tables are read from the operative config exactly as `pipelines-train` parses it
(`cli.parse_gin`), and every protocol value of an experiment file (and of the files it
includes) is checked: `test_changing_any_protocol_value_fails_its_table` rebinds each one in
turn and requires its table check to fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import gin
import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.metrics import tf_metrics
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipelines import cli, configurables  # noqa: F401 configurables
from pipelines.envs import (
  atari,
  environments,  # noqa: F401 configurables
)
from pipelines.errors import PipelineError

FIRST, MID, LAST = ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST
GIN_DIR = Path(__file__).resolve().parents[2] / "gin"
NATURE = GIN_DIR / "dqn_breakout_nature.gin"
DOPAMINE = GIN_DIR / "dqn_breakout_dopamine.gin"
DOPAMINE_LEGACY = GIN_DIR / "dqn_breakout_dopamine_legacy.gin"


def _parse(path: Path, bindings: list[str] = ()) -> None:
  gin.clear_config()
  cli.parse_gin([str(path)], list(bindings))


def q(name: str):
  return gin.query_parameter(name)


def _ref(name: str) -> str:
  """The configurable an `@reference` binding names, through a `%macro` if it is one."""
  reference = q(name)
  if reference.selector == "gin.macro":
    return q(f"%{reference.scoped_selector.split('/')[0]}").selector
  return reference.selector


def _agent_steps_per_gradient_step() -> float:
  return q("OffPolicyTrainer.collect_steps_per_iteration") / q("OffPolicyTrainer.train_steps_per_iteration")


def _protocol(parameter: str, scope: str = ""):
  """An `AtariProtocol` value: bound once, the same for both paths (atari_env, atari_vector_env)."""
  return q(f"{scope}AtariProtocol.{parameter}")


def _check_common_dqn() -> None:
  """Values every DQN protocol here shares: Nature's network, stacks and frame skip."""
  assert atari.FRAME_SKIP == 4 and atari.STACK == 4  # action repeat 4 frames, history 4 frames
  assert q("run_experiment.frames_per_env_step") == atari.FRAME_SKIP  # frames per agent step
  assert q("q_network.channels_first") is True
  assert q("q_network.conv_layer_params") == ((32, 8, 4), (64, 4, 2), (64, 3, 1))
  assert q("q_network.fc_layer_params") == (512,)
  assert _ref("build_components.agent_fn") == "dqn_agent"
  assert _ref("build_components.trainer_fn") == "OffPolicyTrainer"
  assert _ref("OffPolicyTrainer.replay_fn") == "frame_stack_replay"
  assert _ref("make_environment.env_fn") == "atari_env"
  assert q("make_dataset.batch_size") == 32  # minibatch, transitions
  assert q("make_dataset.num_steps") == 2  # one-step TD targets
  assert q("frame_stack_replay.capacity") == 1_000_000  # transitions = agent steps
  assert q("dqn_agent.gamma") == 0.99
  assert q("OffPolicyTrainer.collect_steps_per_iteration") == 4  # agent steps per update
  assert q("OffPolicyTrainer.train_steps_per_iteration") == 1  # gradient steps per update
  assert q("linear_schedule.start") == 1.0  # initial exploration
  assert q("run_experiment.eval_interval") == 250_000  # agent steps = 1M frames per iteration
  assert q("collect/make_environment.num_envs") == 1  # one game, as both sources play
  assert _protocol("episodic_life", "eval/") is False  # evaluation: whole games
  assert _protocol("clip_rewards", "eval/") is False
  assert _protocol("clip_rewards") is True
  assert _protocol("fire_on_reset") is False  # neither source presses FIRE


def check_nature() -> None:
  """Mnih et al. 2015, Extended Data Table 1, every count in agent steps as DeepMind's
  run_gpu / NeuralQLearner.lua count them (see the gin file's header)."""
  _check_common_dqn()
  assert q("run_experiment.num_env_steps") == 50_000_000  # agent steps (run_gpu steps) = 200M frames
  # Target network update frequency: 10k agent steps.
  assert q("dqn_agent.target_update_period") * _agent_steps_per_gradient_step() == 10_000
  assert _ref("dqn_agent.optimizer") == "tf.keras.optimizers.RMSprop"
  assert q("tf.keras.optimizers.RMSprop.learning_rate") == 0.00025
  assert q("tf.keras.optimizers.RMSprop.rho") == 0.95  # gradient and squared gradient momentum
  assert q("tf.keras.optimizers.RMSprop.momentum") == 0.0
  assert q("tf.keras.optimizers.RMSprop.centered") is True
  # Min squared gradient 0.01 on DeepMind's summed loss = 0.01 / 32^2 on this batch-mean loss.
  assert q("tf.keras.optimizers.RMSprop.epsilon") == 0.01 / q("make_dataset.batch_size") ** 2
  assert _ref("dqn_agent.td_errors_loss_fn") == "tf_agents.common.element_wise_huber_loss"  # clip_delta 1
  assert q("linear_schedule.end") == 0.1  # final exploration
  assert q("linear_schedule.duration") == 1_000_000  # final exploration "frame": agent steps
  assert q("linear_schedule.delay") == 50_000  # decay starts at the replay start
  assert q("OffPolicyTrainer.initial_collect_steps") == 50_000  # replay start, agent steps
  assert _protocol("noop_max") == 30  # no-op max, frames
  assert _protocol("sticky_action_probability") == 0.0
  assert _protocol("episodic_life") is True  # terminal on life loss
  assert _protocol("zero_stack_on_life_loss") is True  # TransitionTable:concatFrames
  assert _protocol("max_episode_frames") == 108_000
  assert q("Evaluator.epsilon") == 0.05
  assert q("Evaluator.num_episodes") == 30
  assert _protocol("max_episode_frames", "eval/") == 18_000  # 5 min at 60 Hz


def check_dopamine(legacy: bool = False) -> None:
  """dopamine/jax/agents/dqn/configs/dqn.gin (legacy: dopamine/agents/dqn/configs/dqn.gin)."""
  _check_common_dqn()
  assert q("run_experiment.num_env_steps") == 200 * 250_000  # Runner.num_iterations x training_steps
  # NatureDQNNetwork: 'same' padding (flax nn.Conv's default; the legacy TF network's
  # padding='same'), Glorot/xavier-uniform kernels on every layer, zero biases.
  assert q("q_network.conv_padding") == "same"
  assert q("q_network.glorot_output") is True
  # target_update_period: 8k agent steps.
  assert q("dqn_agent.target_update_period") * _agent_steps_per_gradient_step() == 8_000
  if legacy:
    assert _ref("dqn_agent.optimizer") == "tf.keras.optimizers.RMSprop"
    assert q("tf.keras.optimizers.RMSprop.learning_rate") == 0.00025
    assert q("tf.keras.optimizers.RMSprop.rho") == 0.95
    assert q("tf.keras.optimizers.RMSprop.momentum") == 0.0
    assert q("tf.keras.optimizers.RMSprop.epsilon") == 0.00001
    assert q("tf.keras.optimizers.RMSprop.centered") is True
    assert _ref("dqn_agent.td_errors_loss_fn") == "tf_agents.common.element_wise_huber_loss"
  else:
    assert _ref("dqn_agent.optimizer") == "tf.keras.optimizers.Adam"
    assert q("tf.keras.optimizers.Adam.learning_rate") == 6.25e-5
    assert q("tf.keras.optimizers.Adam.epsilon") == 1.5e-4
    assert q("tf.keras.optimizers.Adam.beta_1") == 0.9
    assert q("tf.keras.optimizers.Adam.beta_2") == 0.999
    assert _ref("dqn_agent.td_errors_loss_fn") == "tf_agents.common.element_wise_squared_loss"  # mse
  assert q("linear_schedule.end") == 0.01  # epsilon_train
  assert q("linear_schedule.duration") == 250_000  # epsilon_decay_period, agent steps
  assert q("linear_schedule.delay") == 20_000  # min_replay_history, agent steps
  assert q("OffPolicyTrainer.initial_collect_steps") == 20_000
  assert q("Evaluator.epsilon") == 0.001  # epsilon_eval
  assert _protocol("sticky_action_probability") == 0.25  # sticky_actions = True
  assert _protocol("noop_max") == 0  # atari_lib: no no-op starts
  assert _protocol("episodic_life") is False  # terminal_on_life_loss = False
  # max_steps_per_episode: 27k agent steps = 108k frames, training and evaluation.
  assert _protocol("max_episode_frames") == 27_000 * atari.FRAME_SKIP
  assert _protocol("max_episode_frames", "eval/") == 27_000 * atari.FRAME_SKIP


TABLES = {
  NATURE: check_nature,
  DOPAMINE: check_dopamine,
  DOPAMINE_LEGACY: lambda: check_dopamine(legacy=True),
}
# Knobs of this machine, not of the protocol: changing them must not fail a table.
NOT_PROTOCOL = {
  "build_components.seed",
  "run_experiment.log_interval",
  "run_experiment.checkpoint_interval",
  "run_experiment.policy_export_interval",
  "run_experiment.target_return",
  "eval/make_environment.num_envs",
  "make_dataset.prefetch",
  "OffPolicyTrainer.jit_compile",
}
UNUSED = {
  DOPAMINE: {"Evaluator.num_episodes"},  # Dopamine evaluates 125k agent steps, not N games
  DOPAMINE_LEGACY: {
    "Evaluator.num_episodes",
    *(f"tf.keras.optimizers.Adam.{k}" for k in ("learning_rate", "epsilon", "beta_1", "beta_2")),
  },  # the current protocol's Adam, included but replaced by RMSprop
}


@pytest.mark.parametrize("path", list(TABLES), ids=lambda p: p.name)
def test_gin_file_holds_its_cited_table(path):
  try:
    _parse(path)
    TABLES[path]()
  finally:
    gin.clear_config()


def _bindings(path: Path) -> dict[str, str]:
  """`selector = value` lines of a gin file and the files it includes, the file's own last."""
  text = path.read_text()
  found: dict[str, str] = {}
  for include in re.findall(r"^include '([^']+)'", text, re.M):
    found.update(_bindings(GIN_DIR / include))
  for selector, value in re.findall(r"^([\w./]+) = (.+?)(?:\s+#.*)?$", text, re.M):
    found[selector] = value
  return found


def _changed(value: str) -> str | None:
  """Another value of the same kind: numbers change, flags flip, references swap."""
  swaps = {
    "True": "False",
    "False": "True",
    "@tf_agents.common.element_wise_huber_loss": "@tf_agents.common.element_wise_squared_loss",
    "@tf_agents.common.element_wise_squared_loss": "@tf_agents.common.element_wise_huber_loss",
    "@tf.keras.optimizers.RMSprop()": "@tf.keras.optimizers.Adam()",
    "@tf.keras.optimizers.Adam()": "@tf.keras.optimizers.RMSprop()",
    "@dqn_agent": "@c51_agent",
    "@OffPolicyTrainer": "@OnPolicyTrainer",
    "@frame_stack_replay": "@uniform_replay",
    "@atari_env": "@gymnasium_env",
  }
  if value in swaps:
    return swaps[value]
  number = re.search(r"-?[\d_]*\.?\d+(?:e-?\d+)?", value)
  if value.startswith(("%", "@", "'")) or value == "None" or number is None:
    return None
  text = number.group()
  is_float = any(c in text for c in ".e")
  new = repr(float(text.replace("_", "")) * 1.5 + 0.5) if is_float else str(int(text.replace("_", "")) + 1)
  return value[: number.start()] + new + value[number.end() :]


@pytest.mark.parametrize("path", list(TABLES), ids=lambda p: p.name)
def test_changing_any_protocol_value_fails_its_table(path):
  changed = 0
  try:
    for selector, value in _bindings(path).items():
      other = _changed(value)
      if selector in NOT_PROTOCOL | UNUSED.get(path, set()) or other is None:
        continue
      _parse(path, [f"{selector} = {other}"])
      with pytest.raises(AssertionError):
        TABLES[path]()
        pytest.fail(f"{path.name}: {selector} = {other} passes the table")
      changed += 1
  finally:
    gin.clear_config()
  assert changed >= 30


def _play_both_paths(num_envs: int, steps: int, seed: int):
  """The Nature protocol's collect env on both paths, fed the same random actions."""
  # No-op starts are drawn differently (gymnasium: 1..30, ale-py: 0..29) and sticky actions
  # are random: without them both paths replay the same deterministic game.
  _parse(NATURE, ["AtariProtocol.noop_max = 0"])
  with gin.config_scope("collect"):
    wrapped = environments.make_environment(env_fn=atari.atari_env, num_envs=num_envs, seed=seed)
    fast = environments.make_environment(vector_env_fn=atari.atari_vector_env, num_envs=num_envs, seed=seed)
  rng = np.random.default_rng(seed)
  emitted = [(wrapped.reset(), fast.reset())]
  for _ in range(steps):
    actions = rng.integers(0, 4, num_envs)
    emitted.append((wrapped.step(actions), fast.step(actions)))
  games = wrapped.pop_game_returns(), fast.pop_game_returns()
  wrapped.close()
  fast.close()
  gin.clear_config()
  return emitted, games


def test_both_paths_emit_the_same_steps_across_life_losses():
  emitted, (games_wrapped, games_fast) = _play_both_paths(num_envs=2, steps=400, seed=0)
  life_starts = 0
  for t, (a, b) in enumerate(emitted):
    # Pixel-equal: both run ALE's grayscale palette, a max over the last two of 4 frames and
    # OpenCV's INTER_AREA resize to 84x84, in Python and in C++.
    np.testing.assert_array_equal(a.observation, b.observation, err_msg=f"agent step {t}")
    np.testing.assert_array_equal(a.step_type, b.step_type, err_msg=f"agent step {t}")
    np.testing.assert_array_equal(a.reward, b.reward, err_msg=f"agent step {t}")
    np.testing.assert_array_equal(a.discount, b.discount, err_msg=f"agent step {t}")
    if t == 0:
      continue
    before = emitted[t - 1][0]
    for row in range(2):
      if before.step_type[row] == LAST:
        assert a.step_type[row] == FIRST
        assert not a.observation[row, :3].any() and a.observation[row, 3].any()  # [0, 0, 0, f]
        life_starts += before.discount[row] == 0.0
      elif before.step_type[row] == FIRST and t > 1:
        np.testing.assert_array_equal(a.observation[row, :2], 0)  # [0, 0, f, f']
        np.testing.assert_array_equal(a.observation[row, 2], before.observation[row, 3])
  assert life_starts >= 4  # random play loses lives within 400 agent steps
  assert games_wrapped == games_fast


def test_frames_per_agent_step_match_the_emulator():
  """The pipeline's frames (frames_per_env_step x the EnvironmentSteps metric) are the
  emulator's frames played on agent actions; the others are itemized: each game's no-op
  starts and the NOOP step after each life loss."""
  _parse(NATURE)
  frames_per_step = q("run_experiment.frames_per_env_step")
  with gin.config_scope("collect"):
    env = environments.make_environment(env_fn=atari.atari_env, num_envs=1, seed=1)
  gin.clear_config()
  ale = env.gym.envs[0].unwrapped.ale
  metric = tf_metrics.EnvironmentSteps()  # the collect metric that counts env_steps
  rng = np.random.default_rng(1)
  previous = env.reset()
  frame, episode_frame = ale.getFrameNumber(), ale.getEpisodeFrameNumber()
  acted, games, lives_lost = 0, 0, 0
  while games < 2:
    current = env.step(rng.integers(0, 4, 1))
    played = ale.getFrameNumber() - frame
    new_game = ale.getEpisodeFrameNumber() < episode_frame
    frame, episode_frame = ale.getFrameNumber(), ale.getEpisodeFrameNumber()
    metric(
      trajectory.Trajectory(
        step_type=tf.constant(previous.step_type),
        next_step_type=tf.constant(current.step_type),
        observation=(),
        action=(),
        policy_info=(),
        reward=(),
        discount=(),
      )
    )
    if previous.step_type[0] != LAST:  # an agent step: 4 frames, fewer if the game ends in it
      assert played == frames_per_step or (ale.game_over() and 0 < played < frames_per_step), played
      acted += played
    elif new_game:
      games += 1
      assert 1 <= episode_frame <= 30  # the no-op starts of the new game
    else:
      assert played == frames_per_step  # the NOOP step after a life loss
      lives_lost += 1
    previous = current
  env.close()
  assert lives_lost == 4 * games  # Breakout: 5 lives
  assert 0 <= frames_per_step * int(metric.result()) - acted < frames_per_step * games


class _ScriptedAle(gym.vector.VectorEnv):
  """One copy that behaves like ale-py's AtariVectorEnv with `life_loss_info=True`: a life
  loss is `terminated` without a reset; the call after a game over or truncation resets
  (NEXT_STEP autoreset). `script[k]` is (reward, lives, terminated, truncated) of step k."""

  metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

  def __init__(self, script):
    self.num_envs = 1
    self.single_observation_space = gym.spaces.Box(0, 255, (4, 2, 2), np.uint8)
    self.single_action_space = gym.spaces.Discrete(4)
    self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, 1)
    self.action_space = gym.vector.utils.batch_space(self.single_action_space, 1)
    self.script = list(script)
    self.actions: list[int] = []
    self.resets = 0

  def _restart(self):
    self.resets += 1
    self.frame_number, self.lives, self.over = 0, 5, False
    self.stack = np.zeros((4, 2, 2), np.uint8)
    self._push(100 + self.resets)
    return self._result(0.0, False, False)

  def _push(self, value):
    self.stack = np.concatenate([self.stack[1:], np.full((1, 2, 2), value, np.uint8)])

  def _result(self, reward, terminated, truncated):
    info = {"lives": np.array([self.lives]), "episode_frame_number": np.array([self.frame_number])}
    return self.stack[None].copy(), np.array([reward]), np.array([terminated]), np.array([truncated]), info

  def reset(self, *, seed=None, options=None):
    observation, *_, info = self._restart()
    return observation, info

  def step(self, actions):
    if self.over:
      return self._restart()
    self.actions.append(int(actions[0]))
    reward, lives, terminated, truncated = self.script.pop(0)
    self.frame_number += 4
    self._push(len(self.actions))
    self.over = (terminated and not 0 < lives < self.lives) or truncated
    self.lives = lives
    return self._result(reward, terminated, truncated)


# A life lost at step 2, then the game ends on the very next step (a real step in ale-py).
LIFE_LOSS_THEN_GAME_OVER = [(1.0, 5, False, False), (0.0, 4, True, False), (4.0, 0, True, False)]


def test_a_raw_life_loss_env_cannot_lose_the_end_that_follows():
  """Forcing the call after LAST to FIRST would drop this step's reward and termination and
  label the next game's first step MID; VectorEnvironment refuses instead."""
  env = environments.VectorEnvironment(_ScriptedAle(LIFE_LOSS_THEN_GAME_OVER + [(0.0, 5, False, False)]))
  env.reset()
  assert env.step(np.array([3])).step_type[0] == MID
  assert env.step(np.array([3])).step_type[0] == LAST
  with pytest.raises(PipelineError, match="after their episode ended"):
    env.step(np.array([3]))


def test_fast_path_plays_noop_after_a_life_loss_and_keeps_every_end():
  # The game ends during the NOOP step after the life loss: it is reported, the copy restarts.
  raw = _ScriptedAle(LIFE_LOSS_THEN_GAME_OVER + [(0.0, 5, False, False)] * 3)
  env = environments.VectorEnvironment(
    atari._AtariEpisodes(raw, clip_rewards=True, zero_stack_on_life_loss=True)
  )
  steps = [env.reset()] + [env.step(np.array([3])) for _ in range(3)]
  assert [int(s.step_type[0]) for s in steps] == [FIRST, MID, LAST, FIRST]
  assert raw.actions == [3, 3, atari.NOOP]  # the agent's action at the LAST step is not played
  assert steps[2].discount[0] == 0.0 and steps[3].reward[0] == 0.0
  assert env.pop_game_returns() == [5.0]  # 1 + the NOOP step's 4: the score keeps every reward
  assert raw.resets == 2 and steps[3].observation[0, 3, 0, 0] == 102  # the new game's first frame
  assert not steps[3].observation[0, :3].any()

  # The game goes on after the NOOP step, and ends on the agent's next step: LAST, then FIRST.
  raw = _ScriptedAle(LIFE_LOSS_THEN_GAME_OVER[:2] + [(0.0, 4, False, False), (2.0, 0, True, False)])
  env = environments.VectorEnvironment(
    atari._AtariEpisodes(raw, clip_rewards=False, zero_stack_on_life_loss=True)
  )
  steps = [env.reset()] + [env.step(np.array([2])) for _ in range(5)]
  assert [int(s.step_type[0]) for s in steps] == [FIRST, MID, LAST, FIRST, LAST, FIRST]
  assert raw.actions == [2, 2, atari.NOOP, 2]
  np.testing.assert_array_equal(steps[3].observation[0, :, 0, 0], [0, 0, 0, 3])  # [0, 0, 0, f]
  np.testing.assert_array_equal(steps[4].observation[0, :, 0, 0], [0, 0, 3, 4])  # [0, 0, f, f']
  assert steps[4].reward[0] == 2.0 and steps[4].discount[0] == 0.0
  assert env.pop_game_returns() == [3.0]
  assert steps[5].observation[0, 3, 0, 0] == 102


def test_fast_path_life_loss_at_the_frame_cap_starts_a_new_game():
  """ale-py resets a game whose life loss comes with its frame cap (a terminal, not a
  truncation): the NOOP is ignored, and the finished game is still reported."""

  class Capped(_ScriptedAle):
    def step(self, actions):
      played = not self.over
      result = super().step(actions)
      self.over = self.over or (played and len(self.actions) == 2)  # the cap, at the life loss
      return result

  raw = Capped(LIFE_LOSS_THEN_GAME_OVER[:2] + [(0.0, 5, False, False)])
  env = environments.VectorEnvironment(
    atari._AtariEpisodes(raw, clip_rewards=True, zero_stack_on_life_loss=True)
  )
  steps = [env.reset()] + [env.step(np.array([1])) for _ in range(4)]
  assert [int(s.step_type[0]) for s in steps] == [FIRST, MID, LAST, FIRST, MID]
  assert raw.resets == 2 and env.pop_game_returns() == [1.0]
