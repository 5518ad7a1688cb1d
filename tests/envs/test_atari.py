"""Atari suite: preprocessing, score accounting, the fast path's contract, frame-stack replay.

/work/main/.venv/bin/python -m pytest -q tests/envs/test_atari.py
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipelines import cli, configurables  # noqa: F401 configurables
from pipelines.envs import atari, environments
from pipelines.errors import PipelineError
from pipelines.replay import replay  # noqa: F401 configurables
from pipelines.storage import run_folder as rf

from conftest import REPO, cli_env, train_command

FIRST, MID, LAST = ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST


def test_preprocessing_and_stacking():
  env = atari.atari_env(atari.AtariProtocol(episodic_life=False, clip_rewards=False))
  observation, _ = env.reset(seed=0)
  assert observation.shape == (4, 84, 84) and observation.dtype == np.uint8
  assert not observation[:3].any() and observation[3].any()  # zeros before the first frame
  previous = observation
  for _ in range(20):
    observation, *_ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(observation[:3], previous[1:])  # oldest first, slides by one
    previous = observation
  assert env.unwrapped.get_action_meanings()[1] == "FIRE"


def test_training_env_is_the_game_with_life_episodes_and_clipped_rewards():
  """The training env (life-loss episodes, clipped rewards) replays the very same game as an
  unclipped whole-game env fed the same actions (and the NOOP that starts each new life),
  and reports the whole game's score."""
  train = atari.atari_env(atari.AtariProtocol(episodic_life=True, clip_rewards=True))
  game = atari.atari_env(atari.AtariProtocol(episodic_life=False, clip_rewards=False))
  obs_t, _ = train.reset(seed=3)
  obs_g, _ = game.reset(seed=3)
  rng = np.random.default_rng(0)
  score, life_episodes = 0.0, 0
  for _ in range(5_000):
    np.testing.assert_array_equal(obs_t[-1], obs_g[-1])  # older frames: zeroed after a life loss
    action = int(rng.integers(4))
    obs_t, r_t, term_t, trunc_t, info_t = train.step(action)
    obs_g, r_g, term_g, trunc_g, info_g = game.step(action)
    score += r_g
    assert r_t == np.sign(r_g)
    if term_g or trunc_g:
      assert term_t or trunc_t
      assert info_t["episode"]["r"] == score == info_g["episode"]["r"]
      break
    if term_t:  # a life lost: the episode ends, the game goes on with one NOOP step
      life_episodes += 1
      assert "episode" not in info_t
      obs_t, _ = train.reset()
      obs_g, r_g, *_ = game.step(atari.NOOP)
      score += r_g
      assert not obs_t[:3].any()  # the new life's stack starts from zeros
  else:
    pytest.fail("no game ended")
  assert life_episodes == 4  # Breakout: 5 lives


def _step_all(env, steps, rng):
  time_step = env.reset()
  emitted = [time_step]
  for _ in range(steps):
    time_step = env.step(rng.integers(0, 4, env.batch_size))
    emitted.append(time_step)
  return emitted


def test_vector_env_matches_the_wrapper_observation_contract():
  wrapped = environments.make_environment(env_fn=atari.atari_env, num_envs=2)
  fast = environments.make_environment(vector_env_fn=atari.atari_vector_env, num_envs=2)
  assert fast.observation_spec() == wrapped.observation_spec()
  assert fast.action_spec() == wrapped.action_spec()
  emitted = _step_all(fast, 400, np.random.default_rng(0))
  first = emitted[0].observation
  assert first.shape == (2, 4, 84, 84) and first.dtype == np.uint8
  assert not first[:, :3].any() and first[:, 3].any(axis=(1, 2)).all()  # zero padding, newest last
  lives_lost = 0
  for before, after in zip(emitted, emitted[1:], strict=False):
    for row in range(2):
      if after.step_type[row] != FIRST:  # oldest first, one new frame per step
        np.testing.assert_array_equal(after.observation[row, :3], before.observation[row, 1:])
      else:  # a new life (or game) starts from zeros, as in DeepMind's replay
        assert not after.observation[row, :3].any() and after.observation[row, 3].any()
        lives_lost += before.discount[row] == 0.0
  assert lives_lost >= 2
  assert set(np.unique(np.concatenate([t.reward for t in emitted]))) <= {0.0, 1.0}
  wrapped.close()
  fast.close()


def test_vector_env_reports_whole_game_scores():
  env = environments.make_environment(
    vector_env_fn=lambda num_envs: atari.atari_vector_env(num_envs, atari.AtariProtocol(clip_rewards=False)),
    num_envs=1,
  )
  emitted = _step_all(env, 3_000, np.random.default_rng(1))
  games = env.pop_game_returns()
  assert games, "no game ended in 3000 random steps"
  # Rewards of the whole first game, life episodes included (FIRST steps carry none).
  rewards = np.concatenate([t.reward for t in emitted])
  ends = [i for i, t in enumerate(emitted) if t.step_type[0] == LAST]
  assert games[0] == pytest.approx(rewards[: ends[4] + 1].sum())  # 5 lives = 5 episodes
  env.close()


def _data_spec():
  return trajectory.Trajectory(
    step_type=tensor_spec.TensorSpec((), tf.int32),
    observation=tensor_spec.BoundedTensorSpec((4, 84, 84), tf.uint8, 0, 255),
    action=tensor_spec.BoundedTensorSpec((), tf.int64, 0, 3),
    policy_info=(),
    next_step_type=tensor_spec.TensorSpec((), tf.int32),
    reward=tensor_spec.TensorSpec((), tf.float32),
    discount=tensor_spec.TensorSpec((), tf.float32),
  )


@pytest.mark.parametrize("zero_stack", [True, False], ids=["zero_stack", "carried_stack"])
@pytest.mark.parametrize("fast", [False, True], ids=["wrappers", "vector_env"])
def test_replay_rebuilds_emitted_stacks_across_episode_starts(fast, zero_stack, tmp_path):
  num_envs, steps, capacity = 2, 500, 2 * 150  # the ring wraps around three times
  protocol = atari.AtariProtocol(zero_stack_on_life_loss=zero_stack)
  if fast:
    env = environments.make_environment(
      vector_env_fn=functools.partial(atari.atari_vector_env, protocol=protocol), num_envs=num_envs
    )
  else:
    env = environments.make_environment(
      env_fn=functools.partial(atari.atari_env, protocol=protocol), num_envs=num_envs
    )
  emitted = _step_all(env, steps, np.random.default_rng(2))
  store = replay.FrameStore(_data_spec(), num_envs, capacity, seed=0)
  for i, t in enumerate(emitted):
    # The action field carries (step, row) so that each sample names its exact origin.
    action = i * num_envs + np.arange(num_envs, dtype=np.int64)
    store.add(t.observation, t.step_type, [t.step_type, action, t.step_type, t.reward, t.discount])
  assert any(t.step_type[r] == FIRST for t in emitted[-140:] for r in range(num_envs))

  def check(store):
    stacks, others, ids = store.sample(256, 2)
    step_types, actions = others[0], others[1]
    np.testing.assert_array_equal(actions // num_envs, ids)
    rows = actions % num_envs
    np.testing.assert_array_equal(rows[:, 0], rows[:, 1])  # a run stays in its row
    for b in range(256):
      for s in range(2):
        t = emitted[ids[b, s]]
        assert step_types[b, s] == t.step_type[rows[b, s]]
        np.testing.assert_array_equal(stacks[b, s], t.observation[rows[b, s]], err_msg=f"step {ids[b, s]}")
    return ids, rows

  ids, rows = check(store)
  starts = sum(emitted[i].step_type[r] == FIRST for i, r in zip(ids[:, 1], rows[:, 1], strict=True))
  assert starts > 0 and ids.min() >= len(emitted) - capacity // num_envs
  store.save_to(tmp_path / "replay")
  restored = replay.FrameStore(_data_spec(), num_envs, capacity, seed=0)
  restored.restore_from(tmp_path / "replay")
  check(restored)
  env.close()


def _resident_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_replay_memory_is_one_frame_per_step():
  """Filling the store grows the process by one 84x84 frame per step, not a 4-frame stack."""
  num_envs, steps = 2, 10_000
  frame = 84 * 84
  store = replay.FrameStore(_data_spec(), num_envs=num_envs, capacity=num_envs * steps)
  observation = np.random.default_rng(0).integers(1, 255, (num_envs, 4, 84, 84), np.uint8)
  step_type = np.full(num_envs, MID, np.int32)
  others = [
    step_type,
    np.zeros(num_envs, np.int64),
    step_type,
    np.zeros(num_envs, np.float32),
    np.ones(num_envs, np.float32),
  ]
  before = _resident_bytes()
  for _ in range(steps):
    store.add(observation, step_type, others)
  grown = _resident_bytes() - before
  frames = num_envs * steps * frame  # 141 MB; whole stacks would be 4x that
  assert 0.95 * frames < grown < 1.25 * frames, grown / frames


def test_toy_breakout_run_is_killed_and_resumes_with_its_replay(tmp_path):
  root = tmp_path / "run"
  bindings = [
    "run_experiment.num_env_steps = 400",
    "run_experiment.eval_interval = 400",
    "run_experiment.log_interval = 100",
    "run_experiment.checkpoint_interval = 100",
    "run_experiment.policy_export_interval = 400",
    "OffPolicyTrainer.initial_collect_steps = 100",
    "Evaluator.num_episodes = 1",
    "eval/make_environment.num_envs = 1",
    "eval/AtariProtocol.max_episode_frames = 1_000",
    "frame_stack_replay.capacity = 2_000",
  ]
  command = train_command(root, "gin/dqn_breakout_nature.gin", bindings, toy=False)
  process = subprocess.Popen(command, cwd=REPO, env=cli_env(), stderr=subprocess.PIPE, text=True)
  state = root / rf.CHECKPOINTS / "checkpoint"
  deadline = time.time() + 300
  while not (state.exists() and "ckpt-200" in state.read_text()):
    assert process.poll() is None and time.time() < deadline, process.stderr.read()[-3000:]
    time.sleep(0.1)
  process.send_signal(signal.SIGKILL)  # no chance to save: the next launch restores ckpt-200
  process.wait()
  assert any((root / rf.CHECKPOINTS).glob("ckpt-*.replay_buffer"))

  result = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Restored replay_buffer" in result.stderr
  resumed_at = int(result.stderr.split("Resuming")[1].split(" at ")[1].split()[0])
  assert resumed_at >= 200
  records = rf.RunFolder(root).read_metrics()
  # One gradient step per 4 agent steps after 100 random ones: had the replay come back
  # empty, the resumed run would have collected 100 random steps again and trained less.
  # An iteration is 4 agent steps less the restarts after life losses, so the budget ends
  # within one iteration past 400; the resume drops at most one owed gradient step.
  env_steps, train_steps = records[-1]["env_steps"], records[-1]["train_steps"]
  assert 400 <= env_steps < 404
  assert (env_steps - 100) // 4 - 1 <= train_steps <= (env_steps - 100) // 4
  # frames = frames_per_env_step x env_steps: tests/experiments/test_atari_protocols.py checks that
  # against the emulator's own frame counter.
  train = rf.RunFolder(root).read_metrics(rf.TRAIN_METRICS)
  assert [r["env_steps"] for r in train] == sorted(r["env_steps"] for r in train)


def test_another_game_is_one_binding():
  gin.clear_config()
  try:
    cli.parse_gin(["gin/dqn_breakout_nature.gin"], ["GAME = 'Pong'"])
    with gin.config_scope("collect"):
      env = atari.atari_env()
      fast = atari.atari_vector_env(num_envs=1)
    assert env.spec.id == "ALE/Pong-v5" and env.action_space.n == 6
    assert fast.single_action_space.n == 6
    env.close()
    fast.close()
  finally:
    gin.clear_config()


@pytest.mark.parametrize("env_fn", ["atari_env", "atari_vector_env"])
def test_a_switch_bound_the_old_way_names_its_new_home(env_fn):
  """Gin files from before `AtariProtocol` bound each switch per path; they get one line."""
  gin.parse_config(f"{env_fn}.noop_max = 0")
  factory = getattr(atari, env_fn)
  with pytest.raises(PipelineError, match=f"{env_fn} has no parameter noop_max; bind AtariProtocol.noop_max"):
    factory() if env_fn == "atari_env" else factory(num_envs=1)
