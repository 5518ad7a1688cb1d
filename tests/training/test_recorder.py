"""The recorder: every TensorBoard scalar on env steps (and frames for Atari), one record format.

pytest tests/training/test_recorder.py
"""

from collections import defaultdict

import pytest
from tf_agents.metrics import tf_metrics

from pipelines.storage import run_folder as rf
from pipelines.training import recorder

EVAL = {"average_return": 7.0, "return_std": 1.0, "average_episode_length": 50.0, "num_episodes": 2}


def _scalars(logdir) -> dict[str, list[int]]:
  """{tag: [steps]} of every scalar written under `logdir`."""
  import tensorflow as tf

  steps = defaultdict(list)
  for path in sorted(logdir.glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == "scalars":
          steps[value.tag].append(event.step)
  return dict(steps)


@pytest.mark.parametrize("frames_per_env_step", [None, 4])
def test_every_scalar_is_on_env_steps_and_train_steps_are_a_value(tmp_path, frames_per_env_step):
  folder = rf.RunFolder(tmp_path)
  rec = recorder.Recorder(folder, frames_per_env_step)
  metric = tf_metrics.NumberOfEpisodes()
  rec.training(env_steps=1_000, train_steps=250, loss=0.5, metrics=[metric])
  rec.games(env_steps=1_000, returns=[3.0, 5.0])
  rec.evaluation(rec.fields(1_000, 250), EVAL)
  rec.flush()

  train = _scalars(folder.path(rf.TRAIN_SUMMARIES))
  evaluation = _scalars(folder.path(rf.EVAL_SUMMARIES))
  on_env_steps = {
    "losses/loss": [1_000],
    "charts/train_steps": [1_000],
    "Metrics/NumberOfEpisodes": [1_000],
    "charts/train_game_return": [1_000],
  }
  eval_keys = ("average_return", "return_std", "average_episode_length")
  eval_on_env_steps = {f"eval/{key}": [1_000] for key in eval_keys}
  if frames_per_env_step:  # returns also against emulator frames, under their own tags
    assert train == {**on_env_steps, "frames/train_game_return": [4_000]}
    assert evaluation == {**eval_on_env_steps, "frames/average_return": [4_000]}
  else:
    assert train == on_env_steps
    assert evaluation == eval_on_env_steps


def test_records_share_their_leading_fields_and_average_the_games_since_their_last(tmp_path):
  folder = rf.RunFolder(tmp_path)
  rec = recorder.Recorder(folder, frames_per_env_step=4)
  rec.games(100, [1.0, 3.0])
  rec.train_record({**rec.fields(100, 25), "wall_seconds": 1.0}, env_steps_per_second=50.0)
  rec.games(200, [5.0])
  rec.train_record({**rec.fields(200, 50), "wall_seconds": 2.0}, env_steps_per_second=60.0)
  rec.train_record({**rec.fields(300, 75), "wall_seconds": 3.0}, env_steps_per_second=70.0)
  rec.evaluation(rec.fields(300, 75), EVAL)

  train = folder.read_metrics(rf.TRAIN_METRICS)
  assert [list(r)[:3] for r in train] == [["env_steps", "frames", "train_steps"]] * 3
  assert [(r["train_game_return"], r["train_games"]) for r in train] == [(2.0, 2), (5.0, 1), (None, 0)]
  (evaluation,) = folder.read_metrics()
  assert list(evaluation)[:3] == ["env_steps", "frames", "train_steps"]
  assert evaluation["frames"] == 1_200
  # The evaluation averages every game since the previous evaluation, whatever was logged.
  assert (evaluation["train_game_return"], evaluation["train_games"]) == (3.0, 3)
  assert evaluation["average_return"] == 7.0


def test_rewind_drops_both_files_records_past_the_restored_step(tmp_path):
  folder = rf.RunFolder(tmp_path)
  rec = recorder.Recorder(folder)
  for steps in (100, 200, 300):
    rec.evaluation(rec.fields(steps, steps // 4), EVAL)
    rec.train_record(rec.fields(steps, steps // 4))
  kept = rec.rewind(200)
  assert [r["env_steps"] for r in kept] == [100, 200]
  assert [r["env_steps"] for r in folder.read_metrics(rf.TRAIN_METRICS)] == [100, 200]


def test_a_failed_record_write_goes_through_the_loops_error_handler(tmp_path):
  seen = []

  class Handler:
    def __init__(self, what, path):
      seen.append((what, path.name))

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      return False

  rec = recorder.Recorder(rf.RunFolder(tmp_path), writing=Handler)
  rec.evaluation(rec.fields(10, 1), EVAL)
  rec.train_record(rec.fields(10, 1))
  assert seen == [("metrics record", rf.METRICS), ("training record", rf.TRAIN_METRICS)]
