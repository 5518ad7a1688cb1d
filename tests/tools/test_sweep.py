"""pipelines-sweep: expansion and naming; bad input; a real toy sweep killed midway and resumed."""

import signal
import subprocess
import sys
import time

import pytest

from pipelines import sweep
from pipelines.errors import PipelineError
from pipelines.storage import run_folder as rf
from pipelines.tools import child_runs, tracking

from conftest import REPO, TOY_BINDINGS, cli_env, run_module

LR = "tf.keras.optimizers.Adam.learning_rate=[1e-3, 3e-4]"
FC = "q_network.fc_layer_params=[(64,), (128, 128)]"


def test_expressions_parse_as_gin_literals():
  assert sweep.parse_sweep(LR) == sweep.Axis("tf.keras.optimizers.Adam.learning_rate", ("0.001", "0.0003"))
  assert sweep.parse_sweep(FC).values == ("(64,)", "(128, 128)")
  axis = sweep.parse_sweep("gymnasium_env.env_id=['CartPole-v1', 'Acrobot-v1']")
  assert axis.values == ("'CartPole-v1'", "'Acrobot-v1'")
  assert sweep.parse_sweep("build_components.agent_fn=[@dqn_agent]").values == ("@dqn_agent",)


@pytest.mark.parametrize(
  "expression, needle",
  [
    ("q_network.fc_layer_params", "expected NAME=[value, ...]"),
    ("fc_layer_params=[1]", "expected NAME=[value, ...]"),
    ("q_network.fc_layer_params=(64,)", "non-empty list"),
    ("q_network.fc_layer_params=[]", "non-empty list"),
    ("q_network.fc_layer_params=[(64,)", "bad --sweep"),
    ("q_network.fc_layer_params=[(64,)] extra", "unexpected 'extra'"),
    ("q_network.fc_layer_params=[1, 1]", "repeated"),
    ("build_components.seed=[1, 2]", "--seeds"),
  ],
)
def test_malformed_expressions_are_refused(expression, needle):
  with pytest.raises(PipelineError, match=None) as error:
    sweep.parse_sweep(expression)
  assert needle in str(error.value)


def test_runs_are_named_by_short_keys_values_and_seed():
  runs = sweep.expand([sweep.parse_sweep(LR), sweep.parse_sweep(FC)], seeds=2)
  assert len(runs) == 8
  assert runs[0].name == "learning_rate=0.001__fc_layer_params=(64,)__seed=0"
  assert runs[0].bindings == (
    "tf.keras.optimizers.Adam.learning_rate = 0.001",
    "q_network.fc_layer_params = (64,)",
    "build_components.seed = 0",
  )
  assert [r.seed for r in runs] == [0] * 4 + [1] * 4  # seed-major: every config gets seed 0 first
  assert len({r.name for r in runs}) == 8 and len({r.config for r in runs}) == 4
  assert all(r.name == f"{r.config}__seed={r.seed}" for r in runs)
  assert runs == sweep.expand([sweep.parse_sweep(LR), sweep.parse_sweep(FC)], seeds=2)  # stable


def test_names_stay_unique_and_filesystem_safe():
  scoped = [
    sweep.parse_sweep("collect/make_environment.num_envs=[1, 2]"),
    sweep.parse_sweep("eval/make_environment.num_envs=[3]"),
  ]
  names = [r.name for r in sweep.expand(scoped, seeds=1)]
  assert names[0] == "collect.make_environment.num_envs=1__eval.make_environment.num_envs=3__seed=0"
  alike = sweep.parse_sweep("gymnasium_env.env_id=['a/b', 'a b', 'a_b']")
  names = [r.name for r in sweep.expand([alike], seeds=1)]
  assert len(set(names)) == 3
  assert all("/" not in n and " " not in n for n in names)
  assert [r.name for r in sweep.expand([], seeds=2)] == ["seed=0", "seed=1"]


def _sweep_command(root, *sweeps, seeds=2, parallel=2):
  command = [sys.executable, "-m", "pipelines.sweep", "--gin_file=gin/dqn_cartpole.gin", f"--root_dir={root}"]
  command += [f"--gin_bindings={b}" for b in TOY_BINDINGS]
  command += [f"--sweep={s}" for s in sweeps]
  return command + [f"--seeds={seeds}", f"--parallel={parallel}"]


def _last_line(result) -> str:
  return result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""


def test_bad_input_is_one_line_and_launches_nothing(tmp_path):
  a_file = tmp_path / "notes.txt"
  a_file.write_text("x")
  cases = [
    (["--sweep=q_network.fc_layer_params=[(64,)"], tmp_path / "a", "bad --sweep"),
    (["--sweep=q_network.fc_layer_param=[(64,)]"], tmp_path / "b", "fc_layer_param"),
    ([f"--sweep={FC}"], a_file / "sweep", "cannot create --root_dir"),
  ]
  for args, root, needle in cases:
    result = run_module("pipelines.sweep", "--gin_file=gin/dqn_cartpole.gin", f"--root_dir={root}", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert _last_line(result).startswith("pipelines-sweep: error:") and needle in _last_line(result)
    assert not root.exists()
  # An unknown configurable fails the same check as the unknown parameter above (in this
  # process: a second TensorFlow start-up would test nothing more).
  unknown = sweep.Sweep(tmp_path / "c", [str(REPO / "gin/dqn_cartpole.gin")], [], parallel=1)
  with pytest.raises(PipelineError, match="network"):
    unknown.budgets(sweep.expand([sweep.parse_sweep("network.fc_layer_params=[(64,)]")], seeds=1))
  assert not (tmp_path / "c").exists()


# Two runs at once, one short and one five times longer: the sweep is killed when the short
# one finishes, while the long one is under way.
BUDGETS = "run_experiment.num_env_steps=[200, 1000]"


def _complete(root, run):
  return child_runs.is_complete(
    root / run.name, num_env_steps=int(run.bindings[0].split("=")[1]), target_return=None
  )


def test_sweep_killed_midway_resumes_without_rerunning_finished_runs(tmp_path):
  root = tmp_path / "sweep"
  command = _sweep_command(root, BUDGETS, seeds=1, parallel=2)
  runs = sweep.expand([sweep.parse_sweep(BUDGETS)], seeds=1)
  names = [r.name for r in runs]
  process = subprocess.Popen(command, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    deadline = time.time() + 400
    while time.time() < deadline and not (root / sweep.SWEEP_INFO).is_file():
      assert process.poll() is None, process.communicate()[1][-3000:]
      time.sleep(0.2)
    second = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and "in use by another running process" in _last_line(second)
    while time.time() < deadline and not any(_complete(root, r) for r in runs):
      assert process.poll() is None, process.communicate()[1][-3000:]
      time.sleep(0.2)
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  finished = [r.name for r in runs if _complete(root, r)]
  assert finished and len(finished) < len(names), "kill the sweep midway"
  for name in names:  # the killed sweep's runs get SIGTERM (PDEATHSIG), checkpoint and exit
    assert rf.wait_until_unlocked(root / name, timeout=120), name

  result = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"{len(finished)} of 2 runs already finished; skipping them" in result.stderr
  for run in runs:
    assert _complete(root, run), run.name
    folder = rf.RunFolder(root / run.name)
    steps = [r["env_steps"] for r in folder.read_metrics()]
    assert steps == sorted(set(steps)), run.name
    launches = folder.path(rf.COMMAND).read_text().count("--gin_file")
    assert launches == 1 if run.name in finished else launches >= 1, run.name
  assert (root / sweep.SWEEP_INFO).is_file() and (root / child_runs.LOGS / f"{names[0]}.log").is_file()
  # Every run is a session of TensorBoard's HParams tab, those finished before the kill too.
  assert sorted(p.name for p in (root / tracking.HPARAMS).iterdir()) == sorted(names)
