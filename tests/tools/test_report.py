"""pipelines-report on synthetic run folders with known numbers, checked independently."""

import json
import os

import numpy as np
import pytest
import scipy.stats

from pipelines import report
from pipelines.storage import run_folder as rf

from conftest import run_module

# Final returns per seed; earlier evaluations are lower, so curves rise. The names hold
# commas, as real sweep names do ("fc_layer_params=(64,64)").
A, B = "lr=0.001__fc=(64,64)", "lr=0.0003__fc=(64,64)"
# Ten seeds: with five, the bootstrap distribution of the IQM is so coarse that its 2.5%
# quantile jumps between neighbouring values from one random stream to the next.
FINAL = {A: [100.0 * k for k in range(1, 11)], B: [10.0 * k for k in range(1, 10)] + [5000.0]}
STEPS = [1000, 2000, 3000]


def _write_run(path, finals, seed, frames=False):
  path.mkdir(parents=True)
  (path / rf.OPERATIVE_CONFIG).write_text("gymnasium_env.env_id = 'CartPole-v1'\nbuild_components.seed = 0\n")
  final = finals[seed]
  lines = []
  for i, step in enumerate(STEPS):
    record = {"env_steps": step, "average_return": final * (i + 1) / len(STEPS), "wall_seconds": step / 100}
    if frames:
      record["frames"] = 4 * step
    lines.append(json.dumps(record))
  (path / rf.METRICS).write_text("\n".join(lines) + "\n")


@pytest.fixture
def sweep_root(tmp_path):
  root = tmp_path / "sweep"
  for config, finals in FINAL.items():
    for seed in range(len(finals)):
      _write_run(root / f"{config}__seed={seed}", finals, seed)
  (root / "logs").mkdir()
  return root


def _bootstrap_iqm_ci(scores, reps=20_000, seed=1):
  """Percentile bootstrap over runs, written here with numpy only."""
  rng = np.random.default_rng(seed)
  samples = rng.choice(scores, size=(reps, len(scores)), replace=True)
  iqms = scipy.stats.trim_mean(samples, 0.25, axis=1)
  return np.percentile(iqms, [2.5, 97.5])


def test_aggregates_match_independent_computation(sweep_root, tmp_path):
  out, numbers, best = report.write_report(
    [str(sweep_root)], tmp_path / "out", reference_path=None, x_key="env_steps", reps=2000, seed=0
  )
  assert set(numbers) == set(FINAL)
  for config, finals in FINAL.items():
    iqm, low, high = numbers[config]["IQM"]
    expected = scipy.stats.trim_mean(finals, 0.25)  # 25% cut from each end: middle six
    assert iqm == pytest.approx(expected)
    assert low <= expected <= high and low < high
    ind_low, ind_high = _bootstrap_iqm_ci(np.array(finals))
    spread = max(finals) - min(finals)
    assert low == pytest.approx(ind_low, abs=0.08 * spread)
    assert high == pytest.approx(ind_high, abs=0.08 * spread)
    assert numbers[config]["Mean"][0] == pytest.approx(np.mean(finals))
    # rliable's median is over tasks (of per-task means); with one task it is the mean.
    assert numbers[config]["Median"][0] == pytest.approx(np.mean(finals))
  assert scipy.stats.trim_mean(FINAL[A], 0.25) > scipy.stats.trim_mean(FINAL[B], 0.25)
  assert best == A
  assert "Optimality Gap" not in numbers[best]  # raw returns: no gap without a reference

  saved = json.loads((out / report.NUMBERS).read_text())
  (pair, (p, p_low, p_high)), *_ = saved["probability_of_improvement"].items()
  assert pair == f"{A};{B}"
  x, y = np.array(FINAL[A]), np.array(FINAL[B])
  expected_p = np.mean((x[:, None] > y[None]) + 0.5 * (x[:, None] == y[None]))  # 90 of 100 pairs
  assert p == pytest.approx(expected_p) and p_low <= expected_p <= p_high

  for name in report.FIGURES.values():
    assert (out / name).read_bytes()[:4] == b"\x89PNG", name
  summary = (out / report.SUMMARY).read_text()
  assert f"{A} (best IQM)" in summary and "learning_curves.png" in summary
  assert "5000.0" in summary and "e+0" not in summary  # B's best score as a return, not 5e+03
  assert "IQM" in (out / report.TABLE).read_text()


def test_reference_normalises_and_gives_the_optimality_gap(sweep_root, tmp_path):
  reference = tmp_path / "ref.csv"
  reference.write_text("task,random,reference\nCartPole-v1,0,500\n")
  _, numbers, _ = report.write_report(
    [str(sweep_root)], tmp_path / "out", reference_path=str(reference), x_key="env_steps", reps=500, seed=0
  )
  normalised = np.array(FINAL[A]) / 500
  assert numbers[A]["IQM"][0] == pytest.approx(scipy.stats.trim_mean(normalised, 0.25))
  assert numbers[A]["Optimality Gap"][0] == pytest.approx(1 - np.minimum(normalised, 1).mean())


def test_learning_curve_band_is_the_mean_over_seeds(sweep_root):
  runs, _ = report.find_runs([str(sweep_root)])
  group = [r for r in runs if r.config == A]
  grid, mean, low, high = report.curve(group, "env_steps", reps=500, seed=0)
  assert grid.tolist() == STEPS
  assert mean[-1] == pytest.approx(np.mean(FINAL[A]))
  assert np.all(low <= mean) and np.all(mean <= high)


def test_one_run_folder_and_frames_axis(tmp_path):
  run = tmp_path / "pong_run"
  _write_run(run, [21.0], 0, frames=True)
  result = run_module("pipelines.report", str(run), "--x=frames", "--reps=200")
  assert result.returncode == 0, result.stderr[-2000:]
  assert (run / "report" / report.FIGURES["curves"]).is_file()
  assert "| pong_run |" in (run / "report" / report.SUMMARY).read_text()


def test_bad_input_is_one_line(tmp_path, sweep_root):
  empty = tmp_path / "empty"
  empty.mkdir()
  readonly = tmp_path / "readonly"
  readonly.mkdir()
  readonly.chmod(0o500)
  cases = [
    ([str(empty)], "no runs found"),
    ([str(sweep_root), "--x=frames"], "has no 'frames'"),
    ([str(tmp_path / "nowhere")], "no such folder"),
  ]
  if os.geteuid() != 0:  # root may write anywhere
    cases.append(([str(sweep_root), f"--out={readonly}/report"], "cannot write the report"))
  cases.append(([str(sweep_root), f"--out={sweep_root / f'{A}__seed=0' / rf.METRICS}/x"], "cannot write"))
  for args, needle in cases:
    result = run_module("pipelines.report", *args)
    assert result.returncode == 2, (args, result.stderr[-2000:])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pipelines-report: error:") and needle in last, last
