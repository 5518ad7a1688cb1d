"""How often pipelines-launch restarts a role that died (child_runs.RestartBudget)."""

from __future__ import annotations

from pipelines.tools import child_runs


def test_a_role_dying_at_start_up_stops_after_the_limit():
  budget = child_runs.RestartBudget(limit=5, healthy_seconds=600.0)
  assert [budget.spend(uptime=3.0) for _ in range(6)] == [True] * 5 + [False]


def test_a_role_that_ran_long_enough_before_dying_starts_a_new_count():
  budget = child_runs.RestartBudget(limit=5, healthy_seconds=600.0)
  # A multi-day run: every fault after hours of service is restarted, far more than 5 in all.
  assert all(budget.spend(uptime=3_600.0) for _ in range(20))
  # Then 5 quick deaths in a row use the budget up again.
  assert [budget.spend(uptime=1.0) for _ in range(5)] == [True] * 4 + [False]
