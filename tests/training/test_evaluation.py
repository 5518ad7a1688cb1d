"""training/evaluation.py: the evaluator's episodes over batched copies, in one graph.

pytest tests/training/test_evaluation.py
"""

import numpy as np
import pytest
from tf_agents.environments import batched_py_environment, py_environment, tf_py_environment
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts

from pipelines.training import evaluation


class _FixedLength(py_environment.PyEnvironment):
  """Episodes of exactly `length` steps, reward 1 per step: return == length."""

  def __init__(self, length: int):
    super().__init__(handle_auto_reset=True)  # the step after LAST restarts, as gymnasium's do
    self._length, self._t = length, 0

  def observation_spec(self):
    return array_spec.ArraySpec((1,), np.float32)

  def action_spec(self):
    return array_spec.BoundedArraySpec((), np.int32, 0, 1)

  def _reset(self):
    self._t = 0
    return ts.restart(np.zeros(1, np.float32))

  def _step(self, action):
    self._t += 1
    observation = np.zeros(1, np.float32)
    return ts.termination(observation, 1.0) if self._t >= self._length else ts.transition(observation, 1.0)


def _copies(*lengths):
  envs = [_FixedLength(n) for n in lengths]
  return tf_py_environment.TFPyEnvironment(
    batched_py_environment.BatchedPyEnvironment(envs, multithreading=False)
  )


@pytest.mark.parametrize(
  "num_episodes, expected",
  [
    (5, [2, 2, 4, 4, 6]),  # quotas 2, 2, 1: the fast copy plays no third episode
    (2, [2, 4]),  # quotas 1, 1, 0: the third copy contributes nothing
    (7, [2, 2, 2, 4, 4, 6, 6]),
  ],
)
def test_each_copy_plays_its_quota_of_whole_episodes(num_episodes, expected):
  env = _copies(2, 4, 6)
  policy = evaluation.random_policy(env)
  result = evaluation.Evaluator(num_episodes=num_episodes)(env, policy)
  assert sorted(result.returns) == expected
  assert sorted(result.lengths) == expected  # the reset step is not counted
  assert result.summary()["num_episodes"] == num_episodes
