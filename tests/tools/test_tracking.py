"""Tracking: the git commit in run.json, a sweep's HParams sessions, W&B without wandb installed,
pipelines-tune's seeds per trial, trials.csv and importance plot (in-process, no training)."""

import csv
import importlib.util
import json
import subprocess
import sys
import types

import optuna
import pytest

from pipelines import sweep, tune
from pipelines.errors import PipelineError
from pipelines.storage import run_folder as rf
from pipelines.tools import tracking

from conftest import run_module

LR = "tf.keras.optimizers.Adam.learning_rate=[1e-3, 3e-4]"


def _git(repo, *args):
  return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_git_state_names_the_commit_and_a_dirty_tree(tmp_path, monkeypatch):
  repo = tmp_path / "code"
  repo.mkdir()
  _git(repo, "init", "-q")
  (repo / "a.py").write_text("x = 1\n")
  _git(repo, "add", "a.py")
  _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
  head = _git(repo, "rev-parse", "HEAD").strip()
  assert rf.git_state(repo) == {"commit": head, "dirty": False}
  (repo / "b.py").write_text("y = 2\n")  # an untracked module the run may import
  assert rf.git_state(repo) == {"commit": head, "dirty": True}

  plain = tmp_path / "plain"
  plain.mkdir()
  assert rf.git_state(plain) is None  # not a checkout: absent, no error
  monkeypatch.setenv("PATH", str(plain))  # git missing
  assert rf.git_state(repo) is None


def test_run_json_holds_the_git_state(tmp_path, monkeypatch):
  monkeypatch.setattr(rf, "git_state", lambda: {"commit": "c0ffee", "dirty": True})
  folder = rf.RunFolder(tmp_path / "run")
  folder.root.mkdir()
  folder.write_metadata("x = 1\n", seed=3, argv=["pipelines-train"])
  assert folder.read_info()["git"] == {"commit": "c0ffee", "dirty": True}


def _metrics(run_dir, returns, steps=(100, 200, 300)):
  run_dir.mkdir(parents=True, exist_ok=True)
  folder = rf.RunFolder(run_dir)
  for step, value in zip(steps, returns, strict=False):
    folder.append_metrics({"env_steps": step, "average_return": value})


def test_a_finished_sweep_run_is_an_hparams_session(tmp_path):
  from tensorboard.backend.event_processing import plugin_event_accumulator
  from tensorboard.plugins.hparams import metadata
  from tensorboard.util import tensor_util

  runs = sweep.expand([sweep.parse_sweep(LR), sweep.parse_sweep("q_network.fc_layer_params=[(64,)]")], 2)
  run = runs[-1]  # learning_rate=0.0003, seed 1
  the_sweep = sweep.Sweep(tmp_path, ["gin/dqn_cartpole.gin"], [], parallel=1)
  _metrics(the_sweep.run_dir(run), [10.0, 30.0, 20.0])
  the_sweep.write_hparams(run)
  the_sweep.write_hparams(run)  # rewritten, not a second session

  logdir = tmp_path / tracking.HPARAMS / run.name
  assert len(list(logdir.iterdir())) == 1
  events = plugin_event_accumulator.EventAccumulator(str(logdir), size_guidance={"tensors": 0})
  events.Reload()
  content = events.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
  start = metadata.parse_session_start_info_plugin_data(content)
  # google.protobuf.Value: numbers stay numbers in the table (int seeds become floats)
  hparams = {name: getattr(v, v.WhichOneof("kind")) for name, v in start.hparams.items()}
  assert hparams == {
    "tf.keras.optimizers.Adam.learning_rate": 0.0003,
    "q_network.fc_layer_params": "(64,)",
    "seed": 1.0,
  }
  scalars = {tag: events.Tensors(tag)[-1] for tag in ("final_return", "best_return")}
  assert {tag: float(tensor_util.make_ndarray(e.tensor_proto)) for tag, e in scalars.items()} == {
    "final_return": 20.0,
    "best_return": 30.0,
  }
  assert scalars["final_return"].step == 300  # at the run's last env step


def test_wandb_missing_is_one_line_naming_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
  with pytest.raises(PipelineError, match=r'needs the wandb package: pip install -e "\.\[wandb\]"'):
    tracking.import_wandb()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_train_with_wandb_project_but_no_wandb_exits_2_and_writes_nothing(tmp_path):
  root = tmp_path / "run"
  result = run_module(
    "pipelines.train", "--gin_file=gin/dqn_cartpole.gin", f"--root_dir={root}", "--wandb_project=p"
  )
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("pipelines-train: error: --wandb_project needs the wandb package"), last
  assert not root.exists()


def test_wandb_run_mirrors_the_run_folders_tensorboard(tmp_path, monkeypatch):
  calls = []
  fake = types.ModuleType("wandb")
  fake.tensorboard = types.SimpleNamespace(patch=lambda **kw: calls.append(("patch", kw)))
  fake.init = lambda **kw: calls.append(("init", kw))
  fake.finish = lambda **kw: calls.append(("finish", kw))
  monkeypatch.setitem(sys.modules, "wandb", fake)
  root = tmp_path / "run"
  with tracking.wandb_run("proj", str(root), {"gin_files": ["a.gin"]}):
    pass
  with pytest.raises(KeyError), tracking.wandb_run("proj", str(root), {}):
    raise KeyError("the run failed")
  (patch, first_init, finished, _, second_init, failed) = calls
  assert patch == ("patch", {"root_logdir": str(root)})  # before init: the scalars are synced
  assert first_init[0] == "init" and first_init[1]["project"] == "proj" and first_init[1]["resume"] == "allow"
  assert first_init[1]["config"] == {"gin_files": ["a.gin"]} and first_init[1]["name"] == "run"
  assert second_init[1]["id"] == first_init[1]["id"]  # a resumed run continues its W&B run
  assert finished == ("finish", {"exit_code": 0}) and failed == ("finish", {"exit_code": 1})


SPACE = """
params:
  tf.keras.optimizers.Adam.learning_rate: {float: [1.0e-4, 1.0e-2], log: true}
  q_network.fc_layer_params: {choice: ["(32,)", "(64, 64)"]}
"""


@pytest.fixture
def tuner(tmp_path):
  space = tmp_path / "space.yaml"
  space.write_text(SPACE)
  study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
  return tune.Tuner(tmp_path, ["gin/dqn_cartpole.gin"], [], tune.Space.load(str(space)), study, 2)


def test_each_seed_is_a_child_with_its_seed(tuner, monkeypatch):
  started = []
  monkeypatch.setattr(tune.child_runs, "TrainProcess", lambda command, log: started.append((command, log)))
  trial, _, run_dirs = tuner._start()
  assert run_dirs == [tuner.root / "trial_0000" / "seed=0", tuner.root / "trial_0000" / "seed=1"]
  for seed, (command, log) in enumerate(started):
    assert f"--gin_bindings={tune.SEED_PARAMETER} = {seed}" in command
    assert f"--root_dir={run_dirs[seed]}" in command
    assert log.name == f"trial_0000__seed={seed}.log"


def test_a_trial_reports_and_scores_the_mean_over_its_seeds(tuner):
  trial = tuner.study.ask(tuner.space.distributions)
  run_dirs = tuner.run_dirs(trial.number)
  _metrics(run_dirs[0], [10.0, 20.0, 30.0])
  _metrics(run_dirs[1], [30.0, 40.0])  # behind: step 300 is not reported yet
  reported = set()
  assert not tuner._report_new(trial, run_dirs, reported)
  assert reported == {100, 200}
  frozen = tuner.study._storage.get_trial(trial._trial_id)
  assert frozen.intermediate_values == {100: 20.0, 200: 25.0}  # mean_return of each seed, averaged
  assert tuner.seed_values(run_dirs) == [20.0, 35.0]


def test_trials_csv_and_importance_plot(tuner):
  assert tuner.write_importance() is None  # fewer than 2 completed trials
  for value in (1.0, 5.0, 3.0):
    trial = tuner.study.ask(tuner.space.distributions)
    trial.set_user_attr(tune.SEED_VALUES, [value - 1, value + 1])
    tuner.study.tell(trial, value)
  tuner.study.tell(tuner.study.ask(tuner.space.distributions), state=optuna.trial.TrialState.PRUNED)

  with open(tuner.write_trials(), newline="") as f:
    rows = list(csv.DictReader(f))
  assert [(r["number"], r["state"], r["value"]) for r in rows] == [
    ("0", "COMPLETE", "1.0"),
    ("1", "COMPLETE", "5.0"),
    ("2", "COMPLETE", "3.0"),
    ("3", "PRUNED", ""),
  ]
  assert json.loads(rows[1][tune.SEED_VALUES]) == [4.0, 6.0]
  trial = tuner.study.trials[1]
  assert rows[1]["q_network.fc_layer_params"] == trial.params["q_network.fc_layer_params"]
  assert (
    float(rows[1]["tf.keras.optimizers.Adam.learning_rate"])
    == trial.params["tf.keras.optimizers.Adam.learning_rate"]
  )

  plot = tuner.write_importance()
  assert plot == tuner.root / tune.IMPORTANCE_PNG
  assert plot.read_bytes().startswith(b"\x89PNG")
