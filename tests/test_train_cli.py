"""The real entry points at toy scale: every run-folder artefact, then evaluation."""

import json

from pipelines.storage import run_folder as rf

from conftest import run_module

REQUIRED_METRICS = {
  "env_steps",
  "train_steps",
  "wall_seconds",
  "eval_seconds",
  "average_return",
  "return_std",
  "average_episode_length",
  "num_episodes",
}


def test_run_folder_holds_every_artefact(toy_run):
  for name in (rf.OPERATIVE_CONFIG, rf.COMMAND, rf.RUN_INFO, rf.METRICS, rf.LEARNING_CURVE):
    assert (toy_run / name).is_file(), name
  assert "build_components.agent_fn = @dqn_agent" in (toy_run / rf.OPERATIVE_CONFIG).read_text()
  assert "--gin_file=gin/dqn_cartpole.gin" in (toy_run / rf.COMMAND).read_text()
  info = json.loads((toy_run / rf.RUN_INFO).read_text())
  assert info["seed"] == 0 and info["versions"]["tf-agents"] == "0.19.0"
  assert (toy_run / rf.CHECKPOINTS / "checkpoint").is_file()
  assert (toy_run / rf.POLICY / "saved_model.pb").is_file()
  assert any((toy_run / rf.TRAIN_SUMMARIES).glob("events.out.tfevents.*"))
  assert any((toy_run / rf.EVAL_SUMMARIES).glob("events.out.tfevents.*"))
  assert (toy_run / rf.LEARNING_CURVE).read_bytes()[:4] == b"\x89PNG"

  records = rf.RunFolder(toy_run).read_metrics()
  assert len(records) >= 3  # every 100 env steps up to 400
  for record in records:
    assert REQUIRED_METRICS <= set(record)
    assert record["num_episodes"] == 2
    assert 0 <= record["eval_seconds"] <= record["wall_seconds"]
  steps = [r["env_steps"] for r in records]
  assert steps == sorted(steps) and steps[-1] >= 400


def test_evaluate_prints_one_json_line_for_greedy_and_random(toy_run):
  """Without --num_episodes, the run's own evaluation settings (the toy run's 2 episodes).
  The same command gives the same episodes: the random policy's draws follow --seed."""
  random = []
  for policy, flags, episodes in (("greedy", [], 2), *[("random", ["--num_episodes=3", "--seed=4"], 3)] * 2):
    result = run_module("pipelines.evaluate", f"--root_dir={toy_run}", f"--policy={policy}", *flags)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["policy"] == policy and summary["num_episodes"] == episodes
    assert summary["min_return"] <= summary["average_return"] <= summary["max_return"]
    assert summary["min_return"] >= 8  # CartPole cannot end sooner
    if policy == "random":
      random.append({k: v for k, v in summary.items() if k != "seconds"})
  assert random[0] == random[1]


def test_evaluate_refuses_a_folder_without_a_run(tmp_path):
  result = run_module("pipelines.evaluate", f"--root_dir={tmp_path}")
  assert result.returncode == 2
  assert "holds no run" in result.stderr.strip().splitlines()[-1]


def test_a_bad_init_from_is_the_only_line_and_comes_before_the_device_line(tmp_path):
  result = run_module(
    "pipelines.train",
    "--gin_file=gin/dqn_cartpole.gin",
    f"--root_dir={tmp_path / 'branch'}",
    f"--init_from={tmp_path / 'no_such_run'}",
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
    f"pipelines-train: error: --init_from {tmp_path / 'no_such_run'} holds no run (run.json missing)"
  ]
  assert not (tmp_path / "branch").exists()
