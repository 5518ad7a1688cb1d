"""Every policy kept: numbered policies at each export, `best`, `pipelines-evaluate --step`.

/work/main/.venv/bin/python -m pytest -q tests/agents/test_policies.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipelines import evaluate
from pipelines.storage import checkpoints
from pipelines.storage import run_folder as rf

from conftest import run_module, train_here

# Exports and checkpoints at the first step past 200, past 400 and at the end (past 600): two
# training checkpoints are kept, so the middle one is the earliest a resume can go back to.
BINDINGS = [
  "run_experiment.num_env_steps = 600",
  "run_experiment.checkpoint_interval = 200",
  "run_experiment.policy_export_interval = 200",
]


def _numbered(root: Path) -> list[int]:
  return sorted(int(p.name) for p in (root / rf.POLICIES).iterdir() if p.name.isdigit())


def _load(root: Path, step: str):
  shown, variables = evaluate.policy_at(rf.RunFolder(root), step)
  return shown, checkpoints.load_saved_policy(root / rf.POLICY, variables)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, list[int]]:
  """A finished toy run, and the env steps at which the loop exported its policy."""
  root = tmp_path_factory.mktemp("policies") / "run"
  exported = []
  export = checkpoints.PolicyExporter.export

  def noted(self, env_steps=None):
    exported.append(env_steps)
    export(self, env_steps)

  checkpoints.PolicyExporter.export = noted
  try:
    result = train_here(root, bindings=BINDINGS)
  finally:
    checkpoints.PolicyExporter.export = export
  assert result.returncode == 0, result.stderr[-3000:]
  return root, exported


def test_a_numbered_policy_at_each_export_holds_variables_only(run):
  run, exported = run
  records = rf.RunFolder(run).read_metrics()
  assert len(set(exported)) == 3 and exported[-1] == records[-1]["env_steps"]  # two periodic, the end
  # Also saved: the weights of each evaluation that set a new best (what `best` loads).
  new_bests = [
    r["env_steps"]
    for i, r in enumerate(records)
    if all(r["average_return"] > p["average_return"] for p in records[:i])
  ]
  assert _numbered(run) == sorted(set(exported) | set(new_bests))
  for step in _numbered(run):
    folder = run / rf.POLICIES / str(step)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["variables/variables.data-00000-of-00001", "variables/variables.index"]


def test_step_loads_the_weights_the_run_had_at_that_step(run):
  run, exported = run
  records = {r["env_steps"]: r for r in rf.RunFolder(run).read_metrics()}
  middle = sorted(set(exported))[1]
  shown, policy = _load(run, str(middle))
  assert shown == middle
  # The training checkpoint of that step holds the same weights (and the latest export differs).
  saved = tf.train.load_checkpoint(str(run / rf.CHECKPOINTS / f"ckpt-{middle}"))
  assert int(policy.get_train_step()) == saved.get_tensor("train_step/.ATTRIBUTES/VARIABLE_VALUE")
  tensors = [saved.get_tensor(key) for key in saved.get_variable_to_shape_map()]
  for variable in policy.model_variables:
    assert any(t.shape == variable.shape and np.array_equal(t, variable.numpy()) for t in tensors), (
      variable.name
    )
  _, latest = _load(run, "latest")
  assert int(latest.get_train_step()) == records[max(records)]["train_steps"] > int(policy.get_train_step())
  assert any(
    not np.array_equal(a.numpy(), b.numpy())
    for a, b in zip(latest.model_variables, policy.model_variables, strict=True)
  )


def test_best_is_the_evaluation_with_the_highest_mean_return(run):
  run, _ = run
  records = rf.RunFolder(run).read_metrics()
  top = max(records, key=lambda r: r["average_return"])  # the first of equal returns
  assert json.loads((run / rf.POLICIES / rf.BEST_POLICY).read_text()) == {
    "env_steps": top["env_steps"],
    "average_return": top["average_return"],
  }
  shown, policy = _load(run, "best")
  assert shown == top["env_steps"]
  assert int(policy.get_train_step()) == top["train_steps"]


def test_a_step_never_saved_is_one_line_listing_the_saved_ones(run):
  run, _ = run
  result = run_module("pipelines.evaluate", f"--root_dir={run}", "--step=300")
  listed = ", ".join(map(str, _numbered(run)))
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
    f"pipelines-evaluate: error: --step=300: no policy saved at that step in {run / rf.POLICIES}; "
    f"available: latest, best, or env steps {listed}"
  ]


def _rewound_copy(run, exported, tmp_path):
  """A copy of the run whose newest checkpoint is gone, as after a kill before it was complete:
  it resumes from the second export. Returns (folder, last env steps, resume env steps)."""
  root = tmp_path / "run"
  shutil.copytree(run, root)
  last = rf.RunFolder(root).read_metrics()[-1]["env_steps"]
  middle = sorted(set(exported))[1]
  for path in (root / rf.CHECKPOINTS).glob(f"ckpt-{last}.*"):
    path.unlink()
  (root / rf.CHECKPOINTS / "checkpoint").unlink()
  return root, last, middle


def test_a_resume_from_an_earlier_checkpoint_keeps_no_policy_of_the_discarded_future(run, tmp_path):
  root, last, middle = _rewound_copy(*run, tmp_path)
  # A policy and a best evaluation from the future that is about to be thrown away.
  (root / rf.POLICIES / "450").mkdir(exist_ok=True)
  (root / rf.POLICIES / str(last) / "future").write_text("")
  future_best = {"env_steps": 450, "average_return": 1e9}
  (root / rf.POLICIES / rf.BEST_POLICY).write_text(json.dumps(future_best))

  future = [step for step in _numbered(root) if step > middle]

  result = train_here(root, bindings=BINDINGS)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Resuming {root} at {middle} env steps" in result.stderr
  assert f"Removed the policies saved after {middle} env steps: {future}" in result.stderr
  assert 450 not in _numbered(root) and not (root / rf.POLICIES / str(last) / "future").exists()
  records = rf.RunFolder(root).read_metrics()
  top = max(records, key=lambda r: r["average_return"])
  assert json.loads((root / rf.POLICIES / rf.BEST_POLICY).read_text())["env_steps"] == top["env_steps"]
  # Every policy after the middle one is from the new future: its train step is the one recorded now.
  by_step = {r["env_steps"]: r for r in records}
  for step in [s for s in _numbered(root) if s > middle]:
    _, policy = _load(root, str(step))
    assert int(policy.get_train_step()) == by_step[step]["train_steps"]


class _Stopped(Exception):
  pass


def test_a_resume_that_discards_policies_exports_the_restored_weights_as_latest(run, tmp_path, monkeypatch):
  from pipelines.training import learning

  root, _, middle = _rewound_copy(*run, tmp_path)

  def stop(self):  # right after the restore, before any training
    raise _Stopped

  monkeypatch.setattr(learning.OffPolicyTrainer, "initialize", stop)
  with pytest.raises(_Stopped):
    train_here(root, bindings=BINDINGS)
  saved = tf.train.load_checkpoint(str(root / rf.CHECKPOINTS / f"ckpt-{middle}"))
  restored = saved.get_tensor("train_step/.ATTRIBUTES/VARIABLE_VALUE")
  _, latest = _load(root, "latest")
  assert int(latest.get_train_step()) == restored
  assert _numbered(root)[-1] == middle
