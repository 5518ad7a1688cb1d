"""Bad input and faults: one clear line, exit != 0, existing runs untouched; kills resume."""

import hashlib
import signal
import subprocess
import time

import gin
import pytest

from pipelines import cli, configurables  # noqa: F401  registers every configurable
from pipelines.errors import PipelineError
from pipelines.storage import run_folder as rf

from conftest import REPO, TOY_BINDINGS, cli_env, run_train, train_command, train_here


def _snapshot(root):
  return {
    p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted(root.rglob("*"))
    if p.is_file()
  }


def _error_line(result) -> str:
  lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
  return lines[-1] if lines else ""


def _assert_refused(result, *needles):
  assert result.returncode == 2, result.stderr[-3000:]
  line = _error_line(result)
  assert line.startswith("pipelines-train: error:"), result.stderr[-3000:]
  for needle in needles:
    assert needle in line, line


@pytest.mark.parametrize(
  "gin_text, bindings, needles",
  [
    (None, (), ["gin file not found", "missing.gin"]),
    ("build_components.seed = = 3\n", (), ["bad gin config"]),
    ("include 'dqn_cartpole.gin'\n", ["no_such_thing.rate = 3"], ["no_such_thing"]),
    ("include 'dqn_cartpole.gin'\n", ["dqn_agent.learning_rat = 3"], ["learning_rat"]),
    (
      "include 'dqn_cartpole.gin'\n",
      ["gymnasium_env.env_id = 'CartPole-v9'"],
      ["CartPole-v9", "CartPole-v1"],
    ),
    (
      "include 'dqn_cartpole.gin'\n",
      ["gymnasium_env.env_id = 'Pendulum-v1'"],
      ["DqnAgent", "Pendulum-v1", "discrete"],
    ),
  ],
  ids=["missing-file", "syntax", "unknown-configurable", "unknown-parameter", "unknown-env", "action-space"],
)
def test_bad_input_is_one_line_and_creates_nothing(tmp_path, gin_text, bindings, needles):
  gin_file = tmp_path / "missing.gin"
  if gin_text is not None:
    gin_file = REPO / "gin" / f"_test_{tmp_path.name}.gin"
    gin_file.write_text(gin_text)
  root = tmp_path / "run"
  try:
    result = train_here(root, gin_file=str(gin_file), bindings=bindings, toy=False)
  finally:
    if gin_text is not None:
      gin_file.unlink()
  _assert_refused(result, *needles)
  assert not root.exists()


def test_malformed_binding_among_several_is_named_alone_and_at_once(tmp_path):
  """The command line checks each binding before TensorFlow loads: the error is the only line
  (no notice from gym, no TensorFlow start-up lines) and comes in seconds."""
  root = tmp_path / "run"
  bindings = ["build_components.seed = 1", "run_experiment.==", "q_network.fc_layer_params = (8,)"]
  start = time.monotonic()
  result = run_train(root, bindings=bindings)
  assert result.returncode == 2, result.stderr[-3000:]
  position = len(TOY_BINDINGS) + 2
  assert result.stderr.strip() == (
    f"pipelines-train: error: bad gin binding #{position} 'run_experiment.==': Malformatted scope or selector"
  )
  assert time.monotonic() - start < 8  # TensorFlow alone takes ~10 s to import here
  assert not root.exists()


@pytest.mark.parametrize(
  "bindings, message",
  [
    (
      ["build_components.seed = 1", "no_such_thing.rate = 3"],
      "bad gin binding #2 'no_such_thing.rate = 3': No configurable matching 'no_such_thing'",
    ),
    (
      ["dqn_agent.learning_rat = 3", "build_components.seed = 1"],
      "bad gin binding #1 'dqn_agent.learning_rat = 3': "
      "Configurable 'dqn_agent' doesn't have a parameter named 'learning_rat'",
    ),
    (
      ["build_components.seed = 1", "run_experiment.num_env_steps = (100"],
      "bad gin binding #2 'run_experiment.num_env_steps = (100': unclosed bracket or quote",
    ),
    (
      ["import no_such_module"],
      "bad gin binding #1 'import no_such_module': No module named 'no_such_module'",
    ),
    (
      ["build_components.seed = 1", "run_experiment.num_env_steps = %STEPS"],
      "bad gin config: macro %STEPS is used but never defined "
      "(binding #2 'run_experiment.num_env_steps = %STEPS')",
    ),
  ],
  ids=["unknown-configurable", "unknown-parameter", "unclosed-bracket", "unknown-module", "undefined-macro"],
)
def test_bad_binding_is_named_with_its_position(bindings, message):
  gin.clear_config()
  try:
    with pytest.raises(PipelineError) as raised:
      cli.parse_gin([str(REPO / "gin" / "dqn_cartpole.gin")], bindings)
  finally:
    gin.clear_config()
  assert str(raised.value) == message


def test_bad_line_of_an_included_gin_file_is_named(tmp_path):
  inner, outer = tmp_path / "inner.gin", tmp_path / "outer.gin"
  inner.write_text("include 'dqn_cartpole.gin'\nrun_experiment.seed = 1\n")
  outer.write_text("include 'inner.gin'\n")
  gin.clear_config()
  try:
    with pytest.raises(PipelineError) as raised:
      cli.parse_gin([str(outer)], [])
  finally:
    gin.clear_config()
  assert str(raised.value) == (
    f"bad gin config in {inner}, line 2 (included from {outer}, line 1): "
    "Configurable 'run_experiment' doesn't have a parameter named 'seed'"
  )


def test_existing_run_is_never_damaged_by_bad_input(toy_run):
  before = _snapshot(toy_run)
  cases = [
    (["gymnasium_env.env_id = 'CartPole-v9'"], "CartPole-v9"),
    (["q_network.fc_layer_params = (32,)"], "q_network.fc_layer_params = (32,) (run: (256, 256))"),
  ]
  for bindings, needle in cases:
    _assert_refused(train_here(toy_run, bindings=bindings), needle)
  assert _snapshot(toy_run) == before


def test_foreign_or_unwritable_root_dir_is_refused(tmp_path):
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "thesis.tex").write_text("precious")
  _assert_refused(train_here(foreign), "not empty")
  assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
  a_file = tmp_path / "notes.txt"
  a_file.write_text("x")
  _assert_refused(train_here(a_file / "run"), "cannot create --root_dir")


def _start(root, bindings):
  return subprocess.Popen(
    train_command(root, bindings=bindings),
    cwd=REPO,
    env=cli_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _wait_for(predicate, timeout=180):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return True
    time.sleep(0.2)
  return False


LONG = ["run_experiment.num_env_steps = 2000", "run_experiment.checkpoint_interval = 200"]


def test_sigkill_then_relaunch_resumes_from_the_last_checkpoint(tmp_path):
  root = tmp_path / "run"
  process = _start(root, LONG)
  try:
    assert _wait_for(lambda: len(list((root / rf.CHECKPOINTS).glob("ckpt-*.index"))) >= 2)
  finally:
    process.kill()
    process.wait()
  killed_at = rf.RunFolder(root).read_metrics()[-1]["env_steps"]
  result = run_train(root, bindings=LONG)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Resuming" in result.stderr
  steps = [r["env_steps"] for r in rf.RunFolder(root).read_metrics()]
  assert steps == sorted(set(steps)), "counters must stay monotonic across the kill"
  assert steps[-1] >= 2000
  assert steps[0] < killed_at  # the records before the kill were kept
  assert (root / rf.COMMAND).read_text().count("--gin_file") == 2  # one line per launch


def test_a_second_process_is_refused_and_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  """One live run for both: a second launch on its folder is refused and writes nothing; the
  first goes on undisturbed to a clean stop on SIGINT with a checkpoint at its last step."""
  root = tmp_path / "run"
  first = _start(root, LONG)
  try:
    assert _wait_for(lambda: (root / rf.METRICS).exists())
    second = train_here(root, bindings=LONG)
    _assert_refused(second, "in use by another running process")
    assert _wait_for(lambda: len(rf.RunFolder(root).read_metrics()) >= 2)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
  finally:
    first.kill()
  assert first.returncode == 128 + signal.SIGINT, stderr[-2000:]
  assert "checkpoint saved" in stderr
  assert (root / rf.COMMAND).read_text().count("--gin_file") == 1  # the refused launch wrote nothing
  last = rf.RunFolder(root).read_metrics()[-1]["env_steps"]
  newest = max(int(p.stem.split("-")[1]) for p in (root / rf.CHECKPOINTS).glob("ckpt-*.index"))
  assert newest >= last and newest < 2000


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
  root = tmp_path / "run"
  result = run_train(root, bindings=["dqn_agent.reward_scale_factor = 1e999"])  # inf rewards
  _assert_refused(result, "loss became")
  assert not list((root / rf.CHECKPOINTS).glob("ckpt-*.index"))
