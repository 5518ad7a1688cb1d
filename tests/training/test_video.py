"""pipelines-evaluate --video: a file with one frame per step plus one per reset, at full size."""

import json

import imageio.v2 as imageio
import numpy as np

from conftest import run_module


def _summary(result) -> dict:
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [line for line in result.stdout.splitlines() if line.strip()]
  assert len(lines) == 1
  return json.loads(lines[0])


def test_mp4_of_the_trained_policy(toy_run, tmp_path):
  path = tmp_path / "episodes.mp4"
  summary = _summary(
    run_module("pipelines.evaluate", f"--root_dir={toy_run}", f"--video={path}", "--num_episodes=2")
  )
  assert summary["num_episodes"] == 2 and len(summary["returns"]) == 2
  expected_frames = sum(length + 1 for length in summary["lengths"])  # a reset frame, then one per step
  reader = imageio.get_reader(path)
  assert reader.count_frames() == expected_frames == summary["frames"]
  assert reader.get_meta_data()["size"] == (600, 400)  # CartPole's rgb_array frame, width x height
  assert summary["returns"] == [float(length) for length in summary["lengths"]]  # CartPole: +1 per step


def test_gif_of_the_random_baseline_has_the_return_drawn(toy_run, tmp_path):
  path = tmp_path / "random.gif"
  summary = _summary(
    run_module(
      "pipelines.evaluate", f"--root_dir={toy_run}", f"--video={path}", "--num_episodes=1", "--policy=random"
    )
  )
  frames = imageio.mimread(path, memtest=False)
  assert len(frames) == summary["lengths"][0] + 1
  assert frames[0].shape[:2] == (400, 600)
  corner = np.asarray(frames[-1])[:30, :200, :3]
  assert (corner < 50).any() and (corner > 200).any()  # dark outline, light text: the overlay


def test_bad_video_path_is_one_line(toy_run, tmp_path):
  cases = [
    (f"--video={tmp_path / 'episodes.avi'}", "must end in"),
    (f"--video={tmp_path / 'missing' / 'episodes.mp4'}", "cannot write"),
  ]
  for flag, needle in cases:
    result = run_module("pipelines.evaluate", f"--root_dir={toy_run}", flag)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pipelines-evaluate: error:") and needle in last, last
