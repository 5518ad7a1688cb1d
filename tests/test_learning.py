"""Learning checks: with a fixed seed the agent really learns (a greedy-return threshold)."""

import json

import pytest

from pipelines import run_folder as rf

from conftest import run_train


@pytest.mark.learning
def test_dqn_solves_cartpole(tmp_path):
  root = tmp_path / "dqn"
  result = run_train(root, gin_file="gin/dqn_cartpole.gin", toy=False)
  assert result.returncode == 0, result.stderr[-3000:]
  best = max(r["average_return"] for r in rf.RunFolder(root).read_metrics())
  final = json.loads(result.stdout.split("Final evaluation: ")[1].splitlines()[0])
  assert final["num_episodes"] == 10
  assert best >= 475, f"best 10-episode greedy mean {best}"
