"""pipelines-train --init_from: a new run starts from another run's agent (and replay)."""

import json

import gin
import numpy as np
import pytest
import tensorflow as tf

from pipelines import cli, configurables  # noqa: F401  registers configurables
from pipelines.storage import run_folder as rf
from pipelines.training import (
  experiment,
  warm_start,  # noqa: F401  registers configurables
)

from conftest import REPO, TOY_BINDINGS, train_here


def _q_values(root, steps) -> list[np.ndarray]:
  reader = tf.train.load_checkpoint(str(root / rf.CHECKPOINTS / f"ckpt-{steps}"))
  keys = [k for k in reader.get_variable_to_shape_map() if k.startswith("agent/_q_network/")]
  return [reader.get_tensor(k) for k in keys if k.endswith("VARIABLE_VALUE")]


def test_the_agent_gets_the_source_checkpoints_weights_and_a_zero_train_step(toy_run):
  steps = warm_start.kept_checkpoints(toy_run)[0]  # the older one: not only the newest works
  saved = _q_values(toy_run, steps)
  gin.clear_config()
  try:
    cli.parse_gin([str(REPO / "gin" / "dqn_cartpole.gin")], TOY_BINDINGS)
    parts = experiment.build_components()
    network = parts.agent._q_network.variables
    assert network and not any(np.array_equal(v.numpy(), s) for v in network for s in saved)
    record = warm_start.warm_start(f"{toy_run}:{steps}", parts.agent, parts.train_step, {}, False)
    parts.close()
  finally:
    gin.clear_config()
  assert record == {"run": str(toy_run), "env_steps": steps, "replay": False}
  for variable in network:  # every weight of the online network is one saved at `steps`
    assert any(np.array_equal(variable.numpy(), s) for s in saved), variable.name
  assert int(parts.train_step) == 0


def test_a_new_run_starts_from_the_agent_and_replay_and_counts_from_zero(toy_run, tmp_path):
  root = tmp_path / "branch"
  fresh = rf.RunFolder(toy_run).read_metrics()
  result = train_here(root, init_from=str(toy_run), init_replay=True)
  assert result.returncode == 0, result.stderr[-3000:]
  newest = warm_start.kept_checkpoints(toy_run)[-1]
  assert f"Starting from the agent and replay of {toy_run} at {newest} env steps" in result.stderr
  info = json.loads((root / rf.RUN_INFO).read_text())
  assert info["init_from"] == {"run": str(toy_run), "env_steps": newest, "replay": True}
  records = rf.RunFolder(root).read_metrics()
  assert records[0]["env_steps"] < newest  # its own counters, from zero
  # The restored replay skips the random initial collect (100 env steps here): the branch
  # trains from its first step at the gin's 0.5 gradient steps per env step; a fresh run
  # trains only after the random steps.
  first, fresh_first = records[0], fresh[0]
  assert first["train_steps"] >= 0.4 * first["env_steps"], first
  assert fresh_first["train_steps"] < 0.4 * fresh_first["env_steps"], fresh_first
  # The same command again resumes the branch from its own checkpoint, not the source's.
  again = train_here(root, init_from=str(toy_run), init_replay=True)
  assert again.returncode == 0 and "Starting from" not in again.stderr, again.stderr[-3000:]


@pytest.mark.parametrize(
  "init_from, gin_file, bindings, init_replay, needle",
  [
    ("{tmp}/nowhere", "gin/dqn_cartpole.gin", [], False, "holds no run"),
    ("{run}:7", "gin/dqn_cartpole.gin", [], False, "no checkpoint at 7 env steps; kept: "),
    ("{run}", "gin/dqn_cartpole.gin", ["q_network.fc_layer_params = (32,)"], False, "does not fit"),
    ("{run}", "gin/ppo_cartpole.gin", [], True, "keeps no replay"),
  ],
  ids=["missing", "step", "network", "on-policy-replay"],
)
def test_bad_init_from_is_one_line_and_writes_nothing(
  toy_run, tmp_path, init_from, gin_file, bindings, init_replay, needle
):
  root = tmp_path / "branch"
  before = {p: p.read_bytes() for p in toy_run.rglob("*") if p.is_file()}
  spec = init_from.format(tmp=tmp_path, run=toy_run)
  result = train_here(root, gin_file=gin_file, bindings=bindings, init_from=spec, init_replay=init_replay)
  assert result.returncode == 2, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith("pipelines-train: error: --init") and needle in line, line
  assert not root.exists()
  assert {p: p.read_bytes() for p in toy_run.rglob("*") if p.is_file()} == before
