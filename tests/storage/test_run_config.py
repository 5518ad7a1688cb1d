"""A run continues with a larger budget or other evaluation settings; learning changes are refused."""

import json
import re
import shutil
from pathlib import Path

import pytest

from pipelines.errors import PipelineError
from pipelines.storage import run_folder as rf

from conftest import REPO, train_here


def _copy(toy_run, tmp_path):
  root = tmp_path / "run"
  shutil.copytree(toy_run, root)
  return root


def test_a_larger_budget_and_more_evaluation_episodes_continue_the_run(toy_run, tmp_path):
  root = _copy(toy_run, tmp_path)
  finished = rf.RunFolder(root).read_metrics()[-1]
  assert finished["env_steps"] < 600
  more = ["run_experiment.num_env_steps = 600", "Evaluator.num_episodes = 3"]

  result = train_here(root, bindings=more)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Resuming {root} at {finished['env_steps']} env steps" in result.stderr
  assert "run_experiment.num_env_steps: 400 -> 600" in result.stderr
  records = rf.RunFolder(root).read_metrics()
  later = [r for r in records if r["env_steps"] > finished["env_steps"]]
  assert later and later[-1]["env_steps"] >= 600
  assert later[-1]["num_episodes"] == 3
  # The restored train step goes on (epsilon's schedule is a function of it): no restart.
  assert later[0]["train_steps"] > finished["train_steps"]
  assert [r["env_steps"] for r in records] == sorted({r["env_steps"] for r in records})

  info = json.loads((root / rf.RUN_INFO).read_text())
  (change,) = info["config_changes"]
  assert change["changes"] == {
    "Evaluator.num_episodes": ["2", "3"],
    "run_experiment.num_env_steps": ["400", "600"],
  }
  assert "run_experiment.num_env_steps = 600" in (root / rf.OPERATIVE_CONFIG).read_text()
  assert (root / rf.COMMAND).read_text().count("num_env_steps = 600") == 1  # this launch's line

  again = train_here(root, bindings=more)  # the stored config is now the continued one
  assert again.returncode == 0 and "changed settings" not in again.stderr, again.stderr[-3000:]


def test_a_learning_change_is_refused_naming_each_value_and_writes_nothing(toy_run, tmp_path):
  root = _copy(toy_run, tmp_path)
  before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
  result = train_here(
    root,
    bindings=[
      "run_experiment.num_env_steps = 600",  # allowed alone, but not with the others
      "OffPolicyTrainer.train_steps_per_iteration = 2",
      "dqn_agent.gamma = 0.9",
    ],
  )
  assert result.returncode == 2, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith("pipelines-train: error: --root_dir")
  assert "OffPolicyTrainer.train_steps_per_iteration = 2 (run: 4)" in line
  assert "dqn_agent.gamma = 0.9 (run: 0.99)" in line
  assert "num_env_steps" not in line and "new --root_dir" in line
  assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_config_comparison_of_defaults_explicit_bindings_and_removed_parameters(tmp_path):
  folder = rf.RunFolder(tmp_path)
  stored = (
    "GAME = 'Breakout'\n"
    "AtariProtocol.game = %GAME\n"
    "q_network.fc_layer_params = (512,)\n"
    "q_network.old_setting = 1\n"
    "run_experiment.num_env_steps = 1000\n"
  )
  (tmp_path / rf.OPERATIVE_CONFIG).write_text(stored)
  newer = stored.replace("q_network.old_setting = 1\n", "") + "q_network.new_setting = True\n"
  # A parameter added to the code, left at its default: no change at all.
  changes = folder.check_config(newer, bound="")
  assert changes == {"q_network.old_setting": ["1", None]}
  assert rf.describe_changes(changes) == "q_network.old_setting = 1 (no longer recorded)"
  assert rf.describe_changes({"Evaluator.num_episodes": ["2", "3"]}) == "Evaluator.num_episodes: 2 -> 3"
  # The same parameter bound explicitly is a learning change.
  refused = _refusal(folder, newer, bound="q_network.new_setting = True\n")
  assert "q_network.new_setting = True (run: None)" in refused
  # A macro's value is compared too, not only the `%GAME` that uses it.
  assert "%GAME = 'Pong' (run: 'Breakout')" in _refusal(folder, stored.replace("Breakout", "Pong"))
  # Line wrapping and comments are no change.
  wrapped = stored.replace("(512,)", "(\n    512,)") + "# a comment\n"
  assert folder.check_config(wrapped) == {}


def _refusal(folder, config, bound=""):
  try:
    folder.check_config(config, bound)
  except rf.PipelineError as e:
    return str(e)
  raise AssertionError("not refused")


def test_root_dir_checks_shared_by_runs_sweeps_and_studies(tmp_path):
  a_file = tmp_path / "notes.txt"
  a_file.write_text("x")
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "data.csv").write_text("x")
  launched = tmp_path / "launched"
  (launched / rf.LOGS).mkdir(parents=True)  # pipelines-launch's logs may come before the run
  cases = [
    (a_file, "exists and is not a folder"),
    (a_file / "sweep", "cannot create --root_dir"),
    (foreign, "is not empty and holds no sweep (sweep.json missing)"),
  ]
  for root, needle in cases:
    with pytest.raises(PipelineError, match=re.escape(needle)):
      rf.check_root_dir(root, "sweep.json", "sweep")
  rf.check_root_dir(tmp_path / "new" / "sweep", "sweep.json", "sweep")  # to be created: fine
  rf.RunFolder(launched).check_usable()
  with pytest.raises(PipelineError, match="holds no run"):
    rf.RunFolder(foreign).check_usable()


def test_a_run_started_before_the_atari_protocol_was_bound_once_still_resumes(tmp_path):
  """The stored config of the Breakout run started 2026-12-01 names `atari_env.*` per scope;
  today's gin binds `AtariProtocol.*` once. Its values are read under today's names: the same
  protocol continues, a changed one is still refused."""
  import gin

  from pipelines import cli, configurables

  stored = (Path(__file__).parent / "data" / "breakout_dopamine_operative_config_2026-12-01.gin").read_text()
  assert "collect/collect/atari_env.sticky_action_probability = 0.25" in stored
  gin.clear_config()
  try:
    cli.parse_gin([str(REPO / "gin/dqn_breakout_dopamine.gin")], [])
    configurables.experiment.build_components().close()
    today = gin.operative_config_str()
  finally:
    gin.clear_config()
  assert "AtariProtocol.sticky_action_probability = 0.25" in today
  assert "atari_env.sticky_action_probability" not in today

  folder = rf.RunFolder(tmp_path)
  (tmp_path / rf.OPERATIVE_CONFIG).write_text(stored)
  changes = folder.check_config(today)
  assert not [key for key in changes if "atari" in key.lower()], changes
  (tmp_path / rf.OPERATIVE_CONFIG).write_text(
    stored.replace("sticky_action_probability = 0.25", "sticky_action_probability = 0.0")
  )
  assert "AtariProtocol.sticky_action_probability = 0.25 (run: 0.0)" in _refusal(folder, today)


def test_a_held_folder_is_refused_before_anything_is_built_and_a_new_one_is_not_created(tmp_path):
  """Sweeps, studies and runs ask before their slow parsing (a second sweep used to wait for
  TensorFlow's import to be told); the folder is left as it was."""
  held = rf.RunFolder(tmp_path / "held")
  held.lock()
  try:
    for check in (lambda: rf.refuse_if_in_use(held.root), rf.RunFolder(held.root).check_usable):
      with pytest.raises(PipelineError, match="is in use by another running process"):
        check()
  finally:
    held.unlock()
  rf.refuse_if_in_use(held.root)  # released: fine
  rf.refuse_if_in_use(tmp_path / "new")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["held"]
