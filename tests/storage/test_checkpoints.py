"""Checkpoints that fail to load fall back to the older one; failed writes are one line and resumable.

/work/main/.venv/bin/python -m pytest -q tests/storage/test_checkpoints.py
"""

from __future__ import annotations

import errno
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.policies import policy_saver
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipelines.replay import replay, reverb_replay
from pipelines.storage import checkpoints
from pipelines.storage import run_folder as rf

from conftest import train_here

# Checkpoints and policy exports at ~200 and ~300 env steps (the first 100 are random).
SHORT = [
  "run_experiment.num_env_steps = 300",
  "run_experiment.checkpoint_interval = 100",
  "run_experiment.policy_export_interval = 100",
]
NO_SPACE = "No space left on device"


def _lines(result) -> list[str]:
  return [line for line in result.stderr.splitlines() if line.strip()]


def _checkpoint_numbers(root) -> list[int]:
  return sorted(int(p.stem.split("-")[1]) for p in (root / rf.CHECKPOINTS).glob("ckpt-*.index"))


def _snapshot(folder) -> dict:
  files = [p for p in folder.rglob("*") if p.is_file()]
  return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _copy(toy_run, tmp_path):
  root = tmp_path / "run"
  shutil.copytree(toy_run, root)
  return root


def _truncate(path) -> None:
  with open(path, "r+b") as f:
    f.truncate(path.stat().st_size // 2)


def test_damaged_newest_checkpoint_resumes_from_the_older_one(toy_run, tmp_path):
  root = _copy(toy_run, tmp_path)
  older, newest = _checkpoint_numbers(root)[-2:]
  data = next((root / rf.CHECKPOINTS).glob(f"ckpt-{newest}.data-*"))
  _truncate(data)

  result = train_here(root)
  assert result.returncode == 0, result.stderr[-3000:]
  warnings = [line for line in _lines(result) if line.startswith("warning:")]
  assert len(warnings) == 1, result.stderr
  assert f"ckpt-{newest} does not load ({data.name}: " in warnings[0]
  assert f"resumed from ckpt-{older}" in warnings[0]
  assert f"at {older} env steps" in result.stderr
  damaged = root / rf.CHECKPOINTS / checkpoints.DAMAGED / f"ckpt-{newest}"
  assert (damaged / data.name).exists() and (damaged / f"ckpt-{newest}.index").exists()
  # The state file was rewritten: later saves and pruning went on as usual, and the next
  # launch resumes from the new latest checkpoint without a word about the damaged one.
  state = tf.train.get_checkpoint_state(str(root / rf.CHECKPOINTS))
  assert {Path(p).parent for p in state.all_model_checkpoint_paths} == {root / rf.CHECKPOINTS}
  assert len(_checkpoint_numbers(root)) == 2
  again = train_here(root)
  assert again.returncode == 0 and "warning" not in again.stderr, again.stderr[-3000:]
  steps = [r["env_steps"] for r in rf.RunFolder(root).read_metrics()]
  assert steps == sorted(set(steps))


def test_no_loadable_checkpoint_is_one_error_line_and_moves_nothing(toy_run, tmp_path):
  root = _copy(toy_run, tmp_path)
  folder = root / rf.CHECKPOINTS
  for data in folder.glob("ckpt-*.data-*"):
    _truncate(data)
  before = _snapshot(folder)

  result = train_here(root)
  assert result.returncode == 2, result.stderr[-3000:]
  line = _lines(result)[-1]
  assert line.startswith(f"pipelines-train: error: no checkpoint in {folder} loads ("), line
  for data in folder.glob("ckpt-*.data-*"):
    assert data.name in line
  assert "nothing was moved or deleted" in line and "new --root_dir" in line
  assert _snapshot(folder) == before


def test_no_space_during_checkpoint_save_or_policy_export_is_one_line_and_the_next_run_resumes(
  tmp_path, monkeypatch
):
  """Launch 1: the disk fills during the checkpoint at ~300 env steps; launch 2 (resumed):
  during the policy export after it; launch 3, with space again, finishes the run."""
  root, checkpoints_dir = tmp_path / "run", tmp_path / "run" / rf.CHECKPOINTS
  save = tf.train.CheckpointManager.save

  def disk_full_from_300(self, checkpoint_number=None, **kwargs):
    if checkpoint_number < 300:
      return save(self, checkpoint_number=checkpoint_number, **kwargs)
    prefix = f"{self.directory}/ckpt-{checkpoint_number}"  # what TensorFlow leaves behind
    tf.io.gfile.makedirs(f"{prefix}_temp")
    tf.io.gfile.GFile(f"{prefix}_temp/part-00000-of-00001.data-00000-of-00001", "w").write("x" * 100)
    tf.io.gfile.GFile(f"{prefix}.data-00000-of-00001", "w").write("x" * 100)
    raise OSError(errno.ENOSPC, NO_SPACE, f"{prefix}.data-00000-of-00001")

  monkeypatch.setattr(tf.train.CheckpointManager, "save", disk_full_from_300)
  result = train_here(root, bindings=SHORT)
  assert result.returncode not in (0, 2), result.stderr[-3000:]
  (saved,) = _checkpoint_numbers(root)
  failed_at = rf.RunFolder(root).read_metrics()[-1]["env_steps"]  # evaluated, then checkpointed
  assert _lines(result)[-1] == (
    f"pipelines-train: error: checkpoint save failed while writing {checkpoints_dir}/ckpt-{failed_at}: "
    f"{NO_SPACE}; the last complete checkpoint ({saved} env steps) is intact; "
    "free space and run the same command to resume"
  )
  assert sorted(p.name for p in checkpoints_dir.iterdir()) == [
    "checkpoint",
    f"ckpt-{saved}.data-00000-of-00001",
    f"ckpt-{saved}.index",
  ]
  exported = _snapshot(root / rf.POLICY)
  monkeypatch.undo()

  def disk_full(self, export_dir, **kwargs):
    tf.io.gfile.makedirs(f"{export_dir}/variables")
    tf.io.gfile.GFile(f"{export_dir}/saved_model.pb", "w").write("x" * 100)
    raise tf.errors.ResourceExhaustedError(None, None, f"{export_dir}/variables/variables_temp; {NO_SPACE}")

  monkeypatch.setattr(policy_saver.PolicySaver, "save", disk_full)
  result = train_here(root, bindings=SHORT)
  assert result.returncode not in (0, 2), result.stderr[-3000:]
  assert f"at {saved} env steps" in result.stderr
  saved = _checkpoint_numbers(root)[-1]
  assert _lines(result)[-1] == (
    f"pipelines-train: error: policy export failed while writing {root}/policy.new: {NO_SPACE}; "
    f"the last complete checkpoint ({saved} env steps) is intact; "
    "free space and run the same command to resume"
  )
  assert not (root / "policy.new").exists() and _snapshot(root / rf.POLICY) == exported
  monkeypatch.undo()

  result = train_here(root, bindings=SHORT)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"at {saved} env steps" in result.stderr
  steps = [r["env_steps"] for r in rf.RunFolder(root).read_metrics()]
  assert steps == sorted(set(steps)) and steps[-1] >= 300
  assert _snapshot(root / rf.POLICY) != exported


# Side files: a replay kept beside the TF checkpoint (the frame store's .npy files, or a
# Reverb checkpoint), at unit scale: a Checkpointer, a counter and the replay.


def _spec():
  return trajectory.Trajectory(
    step_type=tensor_spec.TensorSpec((), tf.int32),
    observation=tensor_spec.BoundedTensorSpec((4, 8, 8), tf.uint8, 0, 255),
    action=tensor_spec.BoundedTensorSpec((), tf.int64, 0, 3),
    policy_info=(),
    next_step_type=tensor_spec.TensorSpec((), tf.int32),
    reward=tensor_spec.TensorSpec((), tf.float32),
    discount=tensor_spec.TensorSpec((), tf.float32),
  )


def _add(buffer, steps: int) -> None:
  for t in range(steps):
    observation = np.full((2, 4, 8, 8), t % 250, np.uint8)
    mid = np.full(2, ts.StepType.MID, np.int32)
    buffer.add_batch(
      trajectory.Trajectory(
        mid, observation, np.full(2, t, np.int64), (), mid, np.zeros(2, np.float32), np.ones(2, np.float32)
      )
    )


def _stored(buffer) -> int:
  return int(buffer.store.num_frames) if isinstance(buffer, replay.FrameStackReplay) else buffer.num_frames()


REPLAYS = {
  "frame_store": lambda: replay.frame_stack_replay(_spec(), num_envs=2, capacity=1_000, seed=0),
  "reverb": lambda: reverb_replay.reverb_replay(_spec(), num_envs=2, capacity=1_000),
}
DAMAGE = {
  "flipped_byte": lambda path: path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1])),
  "truncated": _truncate,
  "missing": lambda path: path.unlink(),
}


def _saved_pair(tmp_path, make_replay):
  """Checkpoints 100 (10 steps per copy stored) and 200 (30); returns the folder."""
  steps, buffer = tf.Variable(0, dtype=tf.int64), make_replay()
  checkpointer = checkpoints.Checkpointer(tmp_path / "ckpts", steps=steps, replay_buffer=buffer)
  for number, added in ((100, 10), (200, 20)):
    _add(buffer, added)
    steps.assign(number)
    checkpointer.save(number)
  return tmp_path / "ckpts"


def _restore(folder, make_replay):
  steps, buffer = tf.Variable(0, dtype=tf.int64), make_replay()
  restored = checkpoints.Checkpointer(folder, steps=steps, replay_buffer=buffer).restore()
  return restored, int(steps.numpy()), _stored(buffer)


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
@pytest.mark.parametrize("kind", list(REPLAYS), ids=list(REPLAYS))
def test_damaged_replay_side_file_is_detected_before_use(tmp_path, capsys, kind, damage):
  folder = _saved_pair(tmp_path, REPLAYS[kind])
  files = [p for p in (folder / "ckpt-200.replay_buffer").rglob("*") if p.is_file()]
  victim = max(files, key=lambda p: p.stat().st_size)  # frames.npy, Reverb's chunks
  DAMAGE[damage](victim)
  capsys.readouterr()

  stored = 2 * 10 if kind == "frame_store" else 2 * 9  # Reverb: two-step windows
  assert _restore(folder, REPLAYS[kind]) == (True, 100, stored)
  warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
  assert len(warning) == 1, warning
  assert f"ckpt-200 does not load ({victim.relative_to(folder)}: " in warning[0]  # ckpt-200.replay_buffer/...
  assert (folder / checkpoints.DAMAGED / "ckpt-200" / "ckpt-200.replay_buffer").is_dir()


def test_checkpoint_of_an_older_run_without_manifest_restores_and_still_falls_back(tmp_path, capsys):
  """Run folders from before manifests keep resuming; a side file that does not load (here
  cut short) still sends the restore to the older checkpoint."""
  folder = _saved_pair(tmp_path, REPLAYS["frame_store"])
  for manifest in folder.glob(f"ckpt-*.{checkpoints.MANIFEST}"):
    manifest.unlink()
  assert _restore(folder, REPLAYS["frame_store"]) == (True, 200, 2 * 30)
  assert "warning" not in capsys.readouterr().err
  _truncate(folder / "ckpt-200.replay_buffer" / "frames.npy")
  assert _restore(folder, REPLAYS["frame_store"]) == (True, 100, 2 * 10)
  assert "ckpt-200 does not load (ckpt-200.replay_buffer: ValueError: " in capsys.readouterr().err


def test_side_files_of_a_failed_save_are_never_restored(tmp_path, monkeypatch):
  folder = _saved_pair(tmp_path, REPLAYS["frame_store"])
  steps, buffer = tf.Variable(300, dtype=tf.int64), REPLAYS["frame_store"]()
  checkpointer = checkpoints.Checkpointer(folder, steps=steps, replay_buffer=buffer)
  _add(buffer, 5)

  def disk_full(self, directory):
    directory.mkdir(parents=True)
    (directory / "frames.npy").write_bytes(b"\x93NUMPY half a file")
    raise OSError(errno.ENOSPC, NO_SPACE, str(directory / "frames.npy"))

  monkeypatch.setattr(replay.FrameStore, "save_to", disk_full)
  with pytest.raises(OSError, match=NO_SPACE):
    checkpointer.save(300)
  assert not list(folder.glob("ckpt-300*")) and not list(folder.glob(".ckpt-300*"))
  monkeypatch.undo()
  assert _restore(folder, REPLAYS["frame_store"]) == (True, 200, 2 * 30)


class _SideFile:
  """A `SavedBeside` item that notes what the checkpoints folder held when it was saved."""

  def __init__(self):
    self.folder_when_saved: list[list[str]] = []
    self.restored_from: Path | None = None

  def save_to(self, directory: Path) -> None:
    directory.mkdir(parents=True)
    (directory / "data.npy").write_bytes(b"x" * 10)
    self.folder_when_saved.append(sorted(p.name for p in directory.parent.iterdir()))

  def restore_from(self, directory: Path) -> None:
    self.restored_from = directory
    assert (directory / "data.npy").read_bytes() == b"x" * 10


def test_side_files_come_before_their_tf_checkpoint_and_leave_with_it(tmp_path):
  """Unit level, no run: a side file and its manifest are complete on disk before the TF
  checkpoint that names them exists, and they are deleted when that checkpoint is pruned."""
  side, step = _SideFile(), tf.Variable(0, dtype=tf.int64)
  checkpointer = checkpoints.Checkpointer(tmp_path, max_to_keep=2, step=step, replay=side)
  for number in (100, 200, 300):
    step.assign(number)
    checkpointer.save(number)
  when_300 = side.folder_when_saved[-1]
  assert "ckpt-300.index" not in when_300 and "ckpt-300.manifest.json" not in when_300
  assert "ckpt-300.replay.tmp" in when_300  # written under a staging name, renamed when complete
  names = sorted(p.name for p in tmp_path.iterdir())
  assert "ckpt-100.replay" not in names and "ckpt-100.manifest.json" not in names  # pruned with ckpt-100
  for number in (200, 300):
    assert {f"ckpt-{number}.replay", f"ckpt-{number}.manifest.json", f"ckpt-{number}.index"} <= set(names)

  restored_step, restored_side = tf.Variable(0, dtype=tf.int64), _SideFile()
  assert checkpoints.Checkpointer(tmp_path, step=restored_step, replay=restored_side).restore()
  assert int(restored_step) == 300 and restored_side.restored_from == tmp_path / "ckpt-300.replay"


def test_an_export_carries_its_env_steps_and_a_numbered_policy_its_weights(tmp_path):
  """Exports and checkpoints share one axis: the loaded policy says at which env steps it was
  exported (the distributed evaluator's records), and `policies/<env_steps>/` restores that
  step's weights into the exported graph."""
  from tf_agents.networks import sequential
  from tf_agents.policies import q_policy

  observation = tensor_spec.TensorSpec((2,), tf.float32)
  actions = tensor_spec.BoundedTensorSpec((), tf.int32, 0, 1)
  net = sequential.Sequential([tf.keras.layers.Dense(2)], input_spec=observation)
  policy = q_policy.QPolicy(ts.time_step_spec(observation), actions, q_network=net)
  net.create_variables()
  train_step = tf.Variable(7, dtype=tf.int64)
  env_steps = tf.Variable(1_200, dtype=tf.int64)
  exporter = checkpoints.PolicyExporter(
    policy, train_step, tmp_path / rf.POLICY, tmp_path / rf.POLICIES, env_steps=env_steps
  )
  exporter.export(1_200)
  first_weights = [w.numpy().copy() for w in net.weights]
  for weight in net.weights:
    weight.assign(weight + 1.0)
  train_step.assign(9)
  env_steps.assign(1_800)
  exporter.export(1_800)

  latest = checkpoints.load_saved_policy(tmp_path / rf.POLICY)
  assert (checkpoints.exported_env_steps(latest), int(latest.get_train_step())) == (1_800, 9)
  older = checkpoints.load_saved_policy(tmp_path / rf.POLICY, tmp_path / rf.POLICIES / "1200")
  assert int(older.get_train_step()) == 7
  assert all(np.allclose(a, b.numpy()) for a, b in zip(first_weights, older.model_variables, strict=True))

  # A new best at the step just exported records it without writing the weights again.
  written = (tmp_path / rf.POLICIES / "1800" / "variables").stat().st_mtime_ns
  assert exporter.offer_best(1_800, 10.0)
  assert exporter.best() == {"env_steps": 1_800, "average_return": 10.0}
  assert (tmp_path / rf.POLICIES / "1800" / "variables").stat().st_mtime_ns == written
  assert sorted(p.name for p in (tmp_path / rf.POLICIES).iterdir()) == ["1200", "1800", "best.json"]

  plain = checkpoints.PolicyExporter(policy, train_step, tmp_path / "plain")
  plain.export()
  assert checkpoints.exported_env_steps(checkpoints.load_saved_policy(tmp_path / "plain")) is None
