"""What the distributed roles agree on for frame-stack replays: the Reverb layout follows the
experiment's replay, read from gin without building anything.

    PYTHONPATH=. .venv/bin/python -m pytest -q tests/distributed/test_replay_layout.py
"""

from __future__ import annotations

import gin

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
