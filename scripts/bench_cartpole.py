"""CartPole benchmark: time to a solved policy, loop throughput, eager vs tf.function.

    .venv/bin/python scripts/bench_cartpole.py                  # everything, 3 seeds
    .venv/bin/python scripts/bench_cartpole.py --agents=dqn --seeds=0,1,2 --skip_throughput
    .venv/bin/python scripts/bench_cartpole.py --pendulum --skip_time_to_solve --skip_throughput

1. Time to solve: each agent's experiment file runs through the real CLI per seed, with
   a 10-episode greedy evaluation every 1,000 env steps, until the first evaluation mean
   >= 475. Prints env steps and seconds (run clock, with and without evaluation time,
   and the whole process including Python and TensorFlow start-up), then the medians.
2. Throughput: collect + train env steps/s of the DQN loop in the classic setting of one
   gradient step (batch 64) per env step, measured in-process after warm-up.
3. Eager vs tf.function: the same loop with `tf.config.run_functions_eagerly(True)`.
4. (--pendulum) PPO on Pendulum-v1: the 10-episode greedy mean return after its fixed
   budget (gin/ppo_pendulum.gin: the Zoo's 100k env steps) per seed, and the median.

All figures of one invocation come from the same machine state: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

EXPERIMENTS = {
  "dqn": "gin/dqn_cartpole.gin",
  "ddqn": "gin/ddqn_cartpole.gin",
  "c51": "gin/c51_cartpole.gin",
  "ppo": "gin/ppo_cartpole.gin",
  "a2c": "gin/a2c_cartpole.gin",
  "reinforce": "gin/reinforce_cartpole.gin",
}
PENDULUM = "gin/ppo_pendulum.gin"
SOLVED = 475.0


def time_to_solve(agent: str, seed: int, budget: int) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp) / "run"
    command = [
        sys.executable, "-m", "pipelines.train", f"--gin_file={EXPERIMENTS[agent]}", f"--root_dir={root}",
        f"--gin_bindings=build_components.seed = {seed}",
        "--gin_bindings=run_experiment.eval_interval = 1000",
        f"--gin_bindings=run_experiment.target_return = {SOLVED}",
        f"--gin_bindings=run_experiment.num_env_steps = {budget}",
        "--gin_bindings=Evaluator.num_episodes = 10",
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    process_seconds = time.perf_counter() - start
    if result.returncode != 0:
      raise RuntimeError(result.stderr[-2000:])
    records = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
  hit = next((r for r in records if r["average_return"] >= SOLVED), None)
  if hit is None:
    return {"agent": agent, "seed": seed, "solved": False, "best": max(r["average_return"] for r in records)}
  return {
    "agent": agent,
    "seed": seed,
    "solved": True,
    "env_steps": hit["env_steps"],
    "seconds_incl_eval": hit["wall_seconds"],
    "seconds_excl_eval": round(hit["wall_seconds"] - hit["eval_seconds"], 3),
    "process_seconds": round(process_seconds, 3),
  }


def pendulum_budget(seed: int) -> dict:
  """PPO on Pendulum-v1 for its whole budget: final greedy mean return and seconds."""
  with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp) / "run"
    command = [
        sys.executable, "-m", "pipelines.train", f"--gin_file={PENDULUM}", f"--root_dir={root}",
        f"--gin_bindings=build_components.seed = {seed}",
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    process_seconds = time.perf_counter() - start
    if result.returncode != 0:
      raise RuntimeError(result.stderr[-2000:])
    final = json.loads((root / "metrics.jsonl").read_text().splitlines()[-1])
    # The run's last evaluation is 10 episodes (std ~120 on Pendulum); 100 more episodes of
    # the final greedy policy, from other start states, measure it ~3x more precisely.
    evaluate = [sys.executable, "-m", "pipelines.evaluate", f"--root_dir={root}", "--num_episodes=100"]
    evaluation = subprocess.run(evaluate, cwd=REPO, capture_output=True, text=True)
    if evaluation.returncode != 0:
      raise RuntimeError(evaluation.stderr[-2000:])
    final_100 = json.loads(evaluation.stdout.strip().splitlines()[-1])
  return {
    "agent": "ppo_pendulum",
    "seed": seed,
    "env_steps": final["env_steps"],
    "average_return": final["average_return"],
    "average_return_100_episodes": round(final_100["average_return"], 1),
    "seconds_incl_eval": final["wall_seconds"],
    "seconds_excl_eval": round(final["wall_seconds"] - final["eval_seconds"], 3),
    "process_seconds": round(process_seconds, 3),
  }


def loop_throughput(eager: bool, iterations: int, fc_layer_params: tuple[int, ...]) -> float:
  """Env steps/s of collect + train with one gradient step per env step."""
  import gin
  import tensorflow as tf

  from pipelines import cli, configurables

  gin.clear_config()
  cli.parse_gin(
    [str(REPO / EXPERIMENTS["dqn"])],
    [
      "OffPolicyTrainer.train_steps_per_iteration = 8",  # = collect_steps_per_iteration
      "OffPolicyTrainer.collect_steps_per_iteration = 8",
      "collect/make_environment.num_envs = 8",
      "make_dataset.batch_size = 64",
      f"q_network.fc_layer_params = {tuple(fc_layer_params)}",
    ],
  )
  tf.config.run_functions_eagerly(eager)
  try:
    parts = configurables.experiment.build_components()
    with tf.summary.record_if(False):
      parts.trainer.initialize()
      parts.trainer.run(2)  # warm-up: tracing and XLA compilation
      steps_before, start = int(parts.metrics.env_steps.result()), time.perf_counter()
      parts.trainer.run(iterations)
      seconds = time.perf_counter() - start
    steps = int(parts.metrics.env_steps.result()) - steps_before
    parts.close()
  finally:
    tf.config.run_functions_eagerly(False)
  return steps / seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument(
    "--agents", default=",".join(EXPERIMENTS), help="comma-separated: " + ",".join(EXPERIMENTS)
  )
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--budget", type=int, default=100_000, help="env steps before giving up")
  parser.add_argument("--skip_time_to_solve", action="store_true")
  parser.add_argument("--skip_throughput", action="store_true")
  parser.add_argument("--pendulum", action="store_true", help="also PPO on Pendulum-v1 (each seed)")
  args = parser.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

  if not args.skip_time_to_solve:
    print(f"== time to the first 10-episode greedy evaluation >= {SOLVED} (evaluated every 1,000 env steps)")
    for agent in args.agents.split(","):
      rows = [time_to_solve(agent, int(s), args.budget) for s in args.seeds.split(",")]
      for row in rows:
        print(json.dumps(row))
      solved = [r for r in rows if r["solved"]]
      if len(solved) == len(rows):
        summary = {
          key: statistics.median(r[key] for r in rows)
          for key in ("env_steps", "seconds_excl_eval", "seconds_incl_eval", "process_seconds")
        }
        print(f"{agent}: median over {len(rows)} seeds " + json.dumps(summary))
      else:
        print(f"{agent}: {len(rows) - len(solved)} of {len(rows)} seeds did not reach {SOLVED}")

  if args.pendulum:
    print("== PPO on Pendulum-v1: 10-episode greedy mean return after the fixed budget")
    rows = [pendulum_budget(int(s)) for s in args.seeds.split(",")]
    for row in rows:
      print(json.dumps(row))
    median = statistics.median(r["average_return"] for r in rows)
    median_100 = statistics.median(r["average_return_100_episodes"] for r in rows)
    print(
      f"ppo_pendulum: median over {len(rows)} seeds {median:.1f} (last 10-episode evaluation), "
      f"{median_100:.1f} (100 episodes of the final policy); RL Zoo's PPO with gSDE: -172 after 100k"
    )

  if not args.skip_throughput:
    from pipelines import cli

    cli.quiet_libraries()
    print("== DQN collect + train throughput, 1 gradient step (batch 64) per env step, 8 copies")
    for layers in ((64, 64), (256, 256)):
      graph = loop_throughput(eager=False, iterations=500, fc_layer_params=layers)
      eager = loop_throughput(eager=True, iterations=25, fc_layer_params=layers)
      print(
        f"Q-network {layers}: tf.function {graph:.0f} env steps/s, eager {eager:.0f} env steps/s, "
        f"tf.function / eager = {graph / eager:.1f}x"
      )


if __name__ == "__main__":
  main()
