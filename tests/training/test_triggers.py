"""The loop's periodic work: `IntervalTrigger` fires at the steps TF-Agents' trigger would.

pytest tests/training/test_triggers.py
"""

import math

import pytest

from pipelines.training.experiment import IntervalTrigger


def _fired(interval, start, steps) -> list[int]:
  fired = []
  trigger = IntervalTrigger(interval, lambda: fired.append(current), start)
  for current in steps:
    trigger(current)
  return fired


def test_fires_once_a_step_reaches_last_plus_interval_even_past_a_multiple():
  # Graph calls end at uneven steps (8 copies, restarts): 1_004 fires; the next is due at
  # 1_004 + 1_000 (TF-Agents' rule), so 2_003 does not fire and 2_010 does.
  steps = [500, 999, 1_004, 1_500, 2_003, 2_010, 3_004, 3_010]
  assert _fired(1_000, 0, steps) == [1_004, 2_010, 3_010]


def test_a_resumed_run_keeps_its_grid():
  """Restored at 2_350: the start is aligned down to 2_000, so the next fires at >= 3_000."""
  assert _fired(1_000, 2_350, [2_500, 2_999, 3_001]) == [3_001]


@pytest.mark.parametrize("interval", [None, 0])
def test_no_interval_never_fires_and_never_bounds_a_graph_call(interval):
  assert _fired(interval, 0, [1, 10**9]) == []
  assert IntervalTrigger(interval, lambda: None).steps_to_next(123) == math.inf


def test_steps_to_next_ends_a_graph_call_where_the_event_is_due():
  trigger = IntervalTrigger(250, lambda: None, start=1_000)
  assert trigger.steps_to_next(1_100) == 150
  trigger(1_260)
  assert trigger.steps_to_next(1_260) == 250
