"""scripts/plot_breakout.py: the matched-frames comparison against Dopamine's iterations."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "plot_breakout.py"


@pytest.fixture(scope="module")
def plot_breakout():
  spec = importlib.util.spec_from_file_location("plot_breakout", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_iterations_weight_games_and_split_at_whole_millions(plot_breakout):
  train = [
    {"frames": 500_000, "train_game_return": 1.0, "train_games": 30},
    {"frames": 1_000_000, "train_game_return": 2.0, "train_games": 10},  # still iteration 0
    {"frames": 1_050_000, "train_game_return": 4.0, "train_games": 3},
    {"frames": 1_100_000, "train_game_return": None, "train_games": 0},  # no game ended
    {"frames": 2_000_000, "train_game_return": 6.0, "train_games": 1},
  ]
  result = plot_breakout.per_iteration(train)
  assert list(result) == [0, 1]
  assert result[0] == pytest.approx((1.25, 40))  # (30 * 1 + 10 * 2) / 40, not (1 + 2) / 2
  assert result[1] == pytest.approx((4.5, 4))
