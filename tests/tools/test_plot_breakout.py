"""scripts/plot_breakout.py: the comparison with Dopamine's iterations, and its reference data.

nice .venv/bin/python -m pytest -q -p no:cacheprovider tests/tools/test_plot_breakout.py
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "plot_breakout.py"
REPRODUCE = REPO / "scripts" / "reproduce_breakout.sh"

# Iterations of 1M frames: 0 inside the band, 1 above, 2 below, 3 partial and past the reference.
TRAIN = [
  {"env_steps": 125_000, "frames": 500_000, "train_game_return": 1.0, "train_games": 30},
  {"env_steps": 250_000, "frames": 1_000_000, "train_game_return": 4.0, "train_games": 10},
  {"env_steps": 375_000, "frames": 1_500_000, "train_game_return": 10.0, "train_games": 5},
  {"env_steps": 500_000, "frames": 2_000_000, "train_game_return": 4.0, "train_games": 5},
  {"env_steps": 625_000, "frames": 2_500_000, "train_game_return": 1.0, "train_games": 2},
  {"env_steps": 750_000, "frames": 3_000_000, "train_game_return": None, "train_games": 0},
  {"env_steps": 812_500, "frames": 3_250_000, "train_game_return": 8.0, "train_games": 4},
]
EVALS = [{"env_steps": 250_000, "frames": 1_000_000, "average_return": 2.5}]
# Another agent's rows sit between the DQN's, as in Dopamine's file of several agents.
REFERENCE = """agent,iteration_0idx,frames_end_M,mean_train_return_5runs,min,max
DQN,0,1,1.50,1.00,2.00
C51,0,1,100.0,99.0,101.0
DQN,1,2,5.00,4.00,6.00
C51,1,2,100.0,99.0,101.0
DQN,2,3,3.00,2.00,4.00
"""


@pytest.fixture(scope="module")
def plot_breakout():
  spec = importlib.util.spec_from_file_location("plot_breakout", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses resolve their string annotations through it
  spec.loader.exec_module(module)
  return module


def make_run(root: Path, gin_file: str, train=TRAIN, evals=EVALS) -> Path:
  """A run folder as pipelines.train leaves it, as far as the comparison reads it."""
  root.mkdir(parents=True)
  (root / "command.txt").write_text(f"/x/python -m pipelines.train --gin_file={gin_file} --root_dir={root}\n")
  (root / "train_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
  (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
  return root


@pytest.fixture
def run_dir(tmp_path):
  return make_run(tmp_path / "runs" / "breakout_test", "gin/dqn_breakout_dopamine.gin")


@pytest.fixture
def reference_csv(tmp_path):
  path = tmp_path / "reference.csv"
  path.write_text(REFERENCE)
  return path


def run_script(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


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


def test_comparison_matches_iterations_and_places_them_in_the_band(
  plot_breakout, run_dir, reference_csv, tmp_path
):
  out = tmp_path / "results"
  folder = plot_breakout.rf.RunFolder(run_dir)
  reference = plot_breakout.Reference(reference_csv, None, "fake")
  rows, _ = plot_breakout.write_comparison(folder, out, ["gin/dqn_breakout_dopamine.gin"], reference)
  assert [(r.index, r.games, r.complete, r.band) for r in rows] == [
    (0, 40, True, "inside"),
    (1, 10, True, "above"),
    (2, 2, True, "below"),
    (3, 4, False, "no reference"),
  ]
  assert [r.mean for r in rows] == pytest.approx([1.75, 7.0, 1.0, 8.0])  # games-weighted
  assert [r.reference for r in rows] == [(1.5, 1.0, 2.0), (5.0, 4.0, 6.0), (3.0, 2.0, 4.0), None]  # DQN only

  table = (out / "breakout_test_vs_reference.md").read_text()
  assert "`reference.csv`, agent DQN" in table
  assert "3,250,000 frames (812,500 agent steps)" in table
  assert "| 0 | 0-1M | 1.75 (40) | 1.50 | 1.00 | 2.00 | 1.17x | inside |" in table
  assert "| 1 | 1-2M | 7.00 (10) | 5.00 | 4.00 | 6.00 | 1.40x | above |" in table
  assert "| 2 | 2-3M | 1.00 (2) | 3.00 | 2.00 | 4.00 | 0.33x | below |" in table
  assert "| 3 | 3-4M (partial, to 3.25M) | 8.00 (4) | - | - | - | - | no reference |" in table
  assert "Complete iterations inside or above the band: 2 of 3; below: 2-3M." in table
  assert (
    "| CleanRL dqn_atari.py | 366.9 (+- 39.9, 3 seeds) | 40M frames (10M agent steps) | "
    "training games; no sticky actions, life-loss terminal, Adam 1e-4 | not reached (run at 3.25M frames) |"
  ) in table
  assert "| RL Baselines3 Zoo DQN | 358 | 40M frames (10M agent steps) |" in table
  assert "| Nature DQN (Mnih et al. 2015) | 401.2 | 200M frames (50M agent steps) |" in table
  for name in ("breakout_test_train.csv", "breakout_test_eval.csv", "breakout_test_vs_dopamine.png"):
    assert (out / name).stat().st_size > 0
  assert len((out / "breakout_test_train.csv").read_text().splitlines()) == 1 + len(TRAIN)


def test_published_end_points_show_the_run_once_it_gets_there(plot_breakout):
  train = [{"frames": 40_000_000, "train_game_return": 370.0, "train_games": 2}]
  reference = plot_breakout.Reference(Path("ref.csv"), None, "fake")
  rows = plot_breakout.compare(train, {39: (350.0, 300.0, 360.0)}, 40_000_000)
  table = plot_breakout.markdown("long", ["gin/x.gin"], reference, rows, 40_000_000)
  assert "| 39 | 39-40M | 370.00 (2) | 350.00 | 300.00 | 360.00 | 1.06x | above |" in table
  assert "| 40M frames (10M agent steps) | training games; no sticky actions" in table
  assert table.count("| 370.00 (iteration 39) |") == 3  # CleanRL twice, RL Zoo
  assert "| not reached (run at 40.00M frames) |" in table  # Nature, at 200M frames


@pytest.mark.parametrize(
  "gin_file, expected",
  [
    ("gin/dqn_breakout_dopamine.gin", "CURRENT_DQN"),
    ("/abs/gin/dqn_breakout_dopamine_legacy.gin", "LEGACY_DQN"),
    ("gin/dqn_breakout_nature.gin", "LEGACY_DQN"),
  ],
)
def test_reference_follows_the_gin_file(plot_breakout, gin_file, expected):
  assert plot_breakout.select_reference([gin_file]) == getattr(plot_breakout, expected)


def test_reference_flag_overrides_and_unknown_gin_files_are_refused(plot_breakout):
  chosen = plot_breakout.select_reference(["gin/dqn_breakout_dopamine.gin"], "other.csv", "C51")
  assert (chosen.path, chosen.agent) == (Path("other.csv"), "C51")
  legacy = plot_breakout.select_reference(["gin/dqn_breakout_nature.gin"], agent="IQN")
  assert (legacy.path, legacy.agent) == (plot_breakout.LEGACY_DQN.path, "IQN")  # then refused on reading
  with pytest.raises(plot_breakout.PipelineError, match="no reference curve for gin file"):
    plot_breakout.select_reference(["gin/dqn_cartpole.gin"])
  with pytest.raises(plot_breakout.PipelineError, match="without a known gin file"):
    plot_breakout.select_reference([])


def test_gin_files_are_read_from_the_first_launch(plot_breakout, tmp_path):
  root = tmp_path / "run"
  root.mkdir()
  folder = plot_breakout.rf.RunFolder(root)
  assert plot_breakout.run_gin_files(folder) == []  # no command.txt
  (root / "command.txt").write_text(
    "pipelines-train --gin_file gin/dqn_breakout_nature.gin --gin_file=my.gin --root_dir=r\n"
    "pipelines-train --gin_file=gin/dqn_breakout_dopamine.gin --root_dir=r\n"
  )
  assert plot_breakout.run_gin_files(folder) == ["gin/dqn_breakout_nature.gin", "my.gin"]


def test_the_shipped_references_are_dopamines_curves(plot_breakout):
  current, current_ref = plot_breakout.read_reference(plot_breakout.CURRENT_DQN)
  legacy, legacy_ref = plot_breakout.read_reference(plot_breakout.LEGACY_DQN)
  assert (current_ref.agent, legacy_ref.agent) == ("DQN", None)
  assert (len(current), len(legacy)) == (200, 199)  # the legacy file ends at 199M frames
  # Figures quoted in reference/README.md and issue 14: 51.9 at 10M frames, 3.06 at 2M.
  assert current[9] == (51.94, 48.75, 56.96)
  assert legacy[1] == (3.06, 2.83, 3.27)


@pytest.mark.parametrize(
  "args, message",
  [
    (["--reference={tmp}/missing.csv"], "reference file not found: {tmp}/missing.csv"),
    (
      ["--reference={tmp}/reference.csv", "--agent=IQN"],
      "reference file {tmp}/reference.csv has no rows for agent IQN",
    ),
    (
      ["--gin_file=gin/dqn_breakout_nature.gin", "--agent=IQN"],
      "dopamine_breakout_dqn_train_returns.csv has no agent",
    ),
  ],
)
def test_a_missing_reference_is_one_error_line_and_exit_code_2(
  run_dir, reference_csv, tmp_path, args, message
):
  out = tmp_path / "results"
  result = run_script(f"--root_dir={run_dir}", f"--out_dir={out}", *(a.format(tmp=tmp_path) for a in args))
  assert result.returncode == 2
  assert result.stderr.count("\n") == 1 and result.stderr.startswith("plot_breakout: error: ")
  assert message.format(tmp=tmp_path) in result.stderr
  assert not out.exists()  # nothing written without its reference


@pytest.mark.parametrize(
  "gin_file, label",
  [
    (
      "gin/dqn_breakout_dopamine.gin",
      "Dopamine's current JAX DQN, `dopamine_breakout_cnn_agents_train_returns.csv`",
    ),
    (
      "gin/dqn_breakout_nature.gin",
      "Dopamine's legacy TensorFlow DQN, `dopamine_breakout_dqn_train_returns.csv`",
    ),
  ],
)
def test_reproduce_report_writes_the_comparison_against_the_runs_protocol(tmp_path, gin_file, label):
  run_dir = make_run(tmp_path / "breakout_x", gin_file)
  out = tmp_path / "results"
  env = dict(os.environ, PYTHON=sys.executable, RESULTS=str(out), GIN_FILE="gin/ignored_when_reporting.gin")
  result = subprocess.run(
    ["bash", str(REPRODUCE), str(run_dir), "--report"], capture_output=True, text=True, env=env, timeout=120
  )
  assert result.returncode == 0, result.stderr
  table = (out / "breakout_x_vs_reference.md").read_text()
  assert f"Reference: {label}" in table
  assert "| 0 | 0-1M | 1.75 (40) |" in table
  assert (out / "breakout_x_vs_dopamine.png").exists()
