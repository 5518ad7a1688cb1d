"""pipelines-tune: a tiny real study whose best.gin trains; pruning; resume; bad space files."""

import csv
import json
import sqlite3

import optuna
import pytest

from pipelines import tune
from pipelines.errors import PipelineError

from conftest import TOY_BINDINGS, run_module, train_here

SPACE = """
objective: mean_return
params:
  tf.keras.optimizers.Adam.learning_rate: {float: [1.0e-4, 1.0e-2], log: true}
  q_network.fc_layer_params: {choice: ["(32,)", "(64, 64)"]}
bindings:
  run_experiment.target_return: None
pruner:
  n_startup_trials: 1
"""


def _tune(tmp_path, space_text=SPACE, trials=2, root=None):
  space = tmp_path / "space.yaml"
  space.write_text(space_text)
  args = ["--gin_file=gin/dqn_cartpole.gin", f"--space={space}", f"--root_dir={root or tmp_path / 'study'}"]
  args += [f"--gin_bindings={b}" for b in TOY_BINDINGS] + [f"--trials={trials}", "--parallel=2"]
  return run_module("pipelines.tune", *args, timeout=900)


def _finished_trials(db) -> int:
  with sqlite3.connect(db) as connection:
    query = "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
    return connection.execute(query).fetchone()[0]


def test_tiny_study_writes_a_gin_file_that_trains_and_resumes(tmp_path):
  result = _tune(tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  study = tmp_path / "study"
  best = study / tune.BEST_GIN
  text = best.read_text()
  assert "include 'dqn_cartpole.gin'" in text
  assert "run_experiment.target_return = None" in text and "run_experiment.num_env_steps = 400" in text
  assert "tf.keras.optimizers.Adam.learning_rate = " in text
  assert "q_network.fc_layer_params = (32,)" in text or "q_network.fc_layer_params = (64, 64)" in text
  assert _finished_trials(study / tune.STUDY_DB) == 2
  with open(study / tune.TRIALS_CSV, newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["number"] for r in rows] == ["0", "1"] and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}

  again = _tune(tmp_path)  # the study already holds 2 finished trials: nothing new runs
  assert again.returncode == 0, again.stderr[-3000:]
  assert _finished_trials(study / tune.STUDY_DB) == 2
  assert not (study / "trial_0002").exists()

  trained = train_here(tmp_path / "best_run", gin_file=str(best), toy=False)  # best.gin, not the CLI
  assert trained.returncode == 0, trained.stderr[-3000:]
  final = json.loads(trained.stdout.strip().splitlines()[-1].split(": ", 1)[1])
  assert final["env_steps"] >= 400


def test_a_trial_below_the_median_is_pruned(tmp_path):
  space = tmp_path / "space.yaml"
  space.write_text(SPACE)
  parsed = tune.Space.load(str(space))
  study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
  good = study.ask(parsed.distributions)
  for step in (100, 200, 300):
    good.report(100.0, step)
  study.tell(good, 100.0)
  tuner = tune.Tuner(tmp_path, ["gin/dqn_cartpole.gin"], [], parsed, study)
  run_dir = tmp_path / "trial_0001"
  run_dir.mkdir()
  (run_dir / "metrics.jsonl").write_text(
    "".join(json.dumps({"env_steps": s, "average_return": 10.0}) + "\n" for s in (100, 200))
  )
  reported = set()
  assert tuner._report_new(study.ask(parsed.distributions), [run_dir], reported)
  assert reported == {100}  # stopped at the first evaluation under the median


@pytest.mark.parametrize(
  "space_text, needle",
  [
    ("params: [", "not valid YAML"),
    ("params: {}", "needs a 'params' mapping"),
    ("params:\n  q_network.fc_layer_params: {range: [1, 2]}", "expected {float"),
    ("params:\n  q_network.fc_layer_params: {choice: ['(32,)']}\nobjective: speed", "objective must be"),
  ],
)
def test_bad_space_files_are_refused(tmp_path, space_text, needle):
  space = tmp_path / "space.yaml"
  space.write_text(space_text)
  with pytest.raises(PipelineError) as error:
    tune.Space.load(str(space))
  assert needle in str(error.value)


def test_unknown_parameter_is_one_line_and_starts_nothing(tmp_path):
  result = _tune(tmp_path, "params:\n  q_network.fc_layer_param: {choice: ['(32,)']}\n")
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("pipelines-tune: error:") and "fc_layer_param" in last, last
  assert not (tmp_path / "study").exists()
