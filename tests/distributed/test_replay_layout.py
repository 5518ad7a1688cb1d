"""What the distributed roles agree on for frame-stack replays: the Reverb layout follows the
experiment's replay, read from gin without building anything.

    PYTHONPATH=. .venv/bin/python -m pytest -q tests/distributed/test_replay_layout.py
"""

from __future__ import annotations

import gin
import pytest
import tensorflow as tf

from pipelines import cli, configurables  # noqa: F401  (registers every configurable)
from pipelines.distributed import distributed

from conftest import REPO


def _plan(gin_file: str, bindings=()):
  gin.clear_config()
  try:
    cli.parse_gin([str(REPO / gin_file)], list(bindings))
    return distributed.plan_from_gin()
  finally:
    gin.clear_config()


def test_the_dopamine_breakout_plan_keeps_its_replay_settings():
  """gin/agents/dqn_atari.gin binds the replay through a macro (`%replay_fn`); the plan reads
  the replay it names (this raised KeyError: 'capacity' when the macro was taken for the replay)."""
  plan = _plan("gin/dqn_breakout_dopamine.gin")
  # 1M transitions, 20k before sampling, 1 gradient step x 32 transitions per 4 agent steps.
  assert (plan.capacity, plan.min_size, plan.samples_per_insert) == (1_000_000, 20_000, 8.0)
  assert (plan.sequence_length, plan.batch_size, plan.env_steps_per_iteration) == (2, 32, 4)


@pytest.mark.parametrize(
  ("gin_file", "bindings", "frames_once"),
  [
    ("gin/dqn_breakout_dopamine.gin", [], True),
    ("gin/dqn_breakout_nature.gin", [], True),
    ("gin/dqn_breakout_dopamine_legacy.gin", [], True),
    # The same experiment with TF-Agents' uniform buffer: whole stacks, as in-process.
    ("gin/dqn_breakout_dopamine.gin", ["OffPolicyTrainer.replay_fn = @uniform_replay"], False),
    ("gin/dqn_cartpole.gin", [], False),
    ("gin/sac_pendulum.gin", [], False),
    ("gin/ppo_cartpole.gin", [], False),
  ],
  ids=["dopamine", "nature", "legacy", "atari-uniform", "dqn-cartpole", "sac", "ppo"],
)
def test_the_layout_follows_the_experiments_replay(gin_file, bindings, frames_once):
  assert _plan(gin_file, bindings).frames_once is frames_once


def test_the_learner_compiles_its_update_as_the_trainer_would():
  """XLA for the DQN family on small networks; not on Atari (gin/agents/dqn_atari.gin turns it
  off), nor for on-policy agents, which the learner trains uncompiled."""
  assert _plan("gin/dqn_cartpole.gin").jit_compile is True
  assert _plan("gin/dqn_breakout_dopamine.gin").jit_compile is False
  assert _plan("gin/dqn_cartpole.gin", ["OffPolicyTrainer.jit_compile = False"]).jit_compile is False
  assert _plan("gin/ppo_cartpole.gin").jit_compile is False


def test_the_frame_once_plan_shapes_the_table_writer_and_learner():
  """Items of 2 Atari steps reference 2 x 4 frames of 84x84 once; the learner reads them back
  through ReverbFrameReplay; other plans keep TF-Agents' whole-step windows."""
  from tf_agents.specs import tensor_spec
  from tf_agents.trajectories import trajectory

  from pipelines.replay import reverb_replay as rr

  spec = trajectory.Trajectory(
    step_type=tf.TensorSpec([], tf.int32),
    observation=tensor_spec.BoundedTensorSpec([4, 84, 84], tf.uint8, 0, 255),
    action=tensor_spec.BoundedTensorSpec([], tf.int64, 0, 3),
    policy_info=(),
    next_step_type=tf.TensorSpec([], tf.int32),
    reward=tf.TensorSpec([], tf.float32),
    discount=tf.TensorSpec([], tf.float32),
  )
  atari, cartpole = _plan("gin/dqn_breakout_dopamine.gin"), _plan("gin/dqn_cartpole.gin")
  signature = atari.signature(spec)
  assert signature[rr.FRAMES].shape == (8, 84, 84) and signature[rr.FRAMES].dtype == tf.uint8
  assert signature[rr.STEPS].action.shape == (2,) and signature[rr.STEPS].observation == ()
  assert isinstance(atari.replay(spec, "localhost:1"), rr.ReverbFrameReplay)
  # (TF-Agents' ReverbReplayBuffer, the other plans' learner side, asks a server for its table.)
  assert cartpole.signature(spec).observation.shape == (None, 4, 84, 84)
