"""CartPole benchmark: time to a solved policy, loop throughput, eager vs tf.function.

    .venv/bin/python scripts/bench_cartpole.py                  # everything, 3 seeds
    .venv/bin/python scripts/bench_cartpole.py --agents=dqn --seeds=0,1,2 --skip_throughput
    .venv/bin/python scripts/bench_cartpole.py --pendulum --skip_time_to_solve --skip_throughput
    .venv/bin/python scripts/bench_cartpole.py --agents=dqn,ppo --seeds=0,1,2,3,4 --skip_throughput \
        --sb3_python=/work/sb3-venv/bin/python --sb3_torch_threads=1   # against SB3 + RL Zoo

1. Time to solve: each agent's experiment file runs through the real CLI per seed, with
   a 10-episode greedy evaluation every 1,000 env steps, until the first evaluation mean
   >= 475. Prints env steps and seconds (run clock, with and without evaluation time,
   and the whole process including Python and TensorFlow start-up), then the medians.
2. Throughput: collect + train env steps/s of the DQN loop in the classic setting of one
   gradient step (batch 64) per env step, measured in-process after warm-up.
3. Eager vs tf.function: the same loop with `tf.config.run_functions_eagerly(True)`.
4. (--pendulum) PPO on Pendulum-v1: the 10-episode greedy mean return after its fixed
   budget (gin/ppo_pendulum.gin: the Zoo's 100k env steps) per seed, and the median.

5. (--sb3_python=PATH) SB3 + RL Zoo on the same protocol, in the same run: for each agent
   (dqn, ppo) and seed, the project's time to solve and then SB3's (interleaved, so a slow
   spell of the shared machine hits both), run by scripts/sb3_cartpole.py with PATH, a
   Python whose virtual environment holds stable-baselines3 and rl_zoo3 (the project never
   depends on them; e.g. `python3.11 -m venv /work/sb3-venv && /work/sb3-venv/bin/pip
   install stable-baselines3 rl_zoo3`). SB3 trains with the Zoo's CartPole-v1
   hyperparameters and budget (DQN 5e4, PPO 1e5 env steps), which then also cap the
   project's run unless --budget is given. Prints both rows per seed, the medians (a seed
   that did not solve counts as slower than any that did) and project / SB3 ratios of env
   steps, run seconds including and excluding evaluation, and process seconds (start to
   exit: for the project that includes TensorFlow's import, tracing and XLA compilation).
   --sb3_torch_threads=N passes torch.set_num_threads(N) (the Zoo's --num-threads); 0
   leaves PyTorch's default, whose 2 OpenMP threads ran SB3's updates 10-50x slower on this
   shared 2-core machine (sb3_cartpole.py), so 1 gives SB3 its best case. The load
   average is printed at start and end.

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

from bench_runs import train_then_evaluate

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
SB3_SCRIPT = REPO / "scripts" / "sb3_cartpole.py"
# RL Zoo's n_timesteps for CartPole-v1 (hyperparams/dqn.yml, ppo.yml): SB3's budget and, in a
# comparison, the project's (sb3_cartpole.py reads the Zoo's own files; these caps match them).
ZOO_BUDGETS = {"dqn": 50_000, "ppo": 100_000}
TIMES = ("env_steps", "seconds_incl_eval", "seconds_excl_eval", "process_seconds")


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


def sb3_time_to_solve(python: str, agent: str, seed: int, torch_threads: int) -> dict:
  """SB3 + RL Zoo's run of the same protocol, by scripts/sb3_cartpole.py in its own venv."""
  command = [python, str(SB3_SCRIPT), f"--algo={agent}", f"--seed={seed}", f"--torch_threads={torch_threads}"]
  start = time.perf_counter()
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
  process_seconds = time.perf_counter() - start
  if result.returncode != 0:
    raise RuntimeError(result.stderr[-2000:])
  row = json.loads(result.stdout.strip().splitlines()[-1])
  solved = row["env_steps"] is not None
  return {
    "agent": f"sb3_{agent}",
    "seed": seed,
    "solved": solved,
    **({} if solved else {"best": row["best"]}),
    "env_steps": row["env_steps"],
    "seconds_incl_eval": row["seconds"] if solved else None,
    "seconds_excl_eval": round(row["seconds"] - row["eval_seconds"], 3) if solved else None,
    "process_seconds": round(process_seconds, 3),
    "torch_threads": row["torch_threads"],
    "versions": row["versions"],
    "hyperparams": row["hyperparams"],
  }


def _median(rows: list[dict], key: str) -> float:
  """Median over seeds; a seed that did not solve counts as slower than any that did."""
  return statistics.median(r[key] if r["solved"] else float("inf") for r in rows)


def _ratio(project: float, sb3: float) -> float | None:
  return round(project / sb3, 3) if sb3 not in (0, float("inf")) and project != float("inf") else None


def _finite(value: float) -> float | None:
  return None if value == float("inf") else round(value, 3)


def compare_with_sb3(
  agents: list[str], seeds: list[int], python: str, threads: int, budget: int | None
) -> None:
  """The project's time to solve next to SB3 + RL Zoo's, seed by seed, then medians and ratios."""
  print(f"== project vs SB3 + RL Zoo: time to the first 10-episode greedy evaluation >= {SOLVED}")
  print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  for agent in agents:
    cap = budget or ZOO_BUDGETS[agent]
    print(f"-- {agent}: project budget {cap} env steps, SB3 the Zoo's {ZOO_BUDGETS[agent]}")
    project_rows, sb3_rows = [], []
    for seed in seeds:
      project = time_to_solve(agent, seed, cap)
      sb3 = sb3_time_to_solve(python, agent, seed, threads)
      project_rows.append(project)
      sb3_rows.append(sb3)
      print(json.dumps(project))
      print(json.dumps({k: v for k, v in sb3.items() if k not in ("versions", "hyperparams")}))
      if project["solved"] and sb3["solved"]:
        ratios = {key: _ratio(project[key], sb3[key]) for key in TIMES}
        print(f"{agent} seed {seed}: project / SB3 " + json.dumps(ratios))
    medians = {}
    for name, rows in (("project", project_rows), ("sb3", sb3_rows)):
      medians[name] = {key: _median(rows, key) for key in TIMES}
      unsolved = sum(not r["solved"] for r in rows)
      print(
        f"{agent} {name}: median over {len(rows)} seeds "
        + json.dumps({key: _finite(v) for key, v in medians[name].items()})
        + (f" ({unsolved} did not reach {SOLVED})" if unsolved else "")
      )
    ratios = {key: _ratio(medians["project"][key], medians["sb3"][key]) for key in TIMES}
    print(f"{agent}: median project / median SB3 " + json.dumps(ratios) + " (target <= 0.5 for the seconds)")
    first = sb3_rows[0]
    versions = json.dumps(first["versions"])
    print(f"{agent}: SB3 {versions}, torch threads {first['torch_threads']}, {first['hyperparams']}")
  print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def pendulum_budget(seed: int) -> dict:
  """PPO on Pendulum-v1 for its whole budget: final greedy mean return and seconds."""
  with tempfile.TemporaryDirectory() as tmp:
    # The run's last evaluation is 10 episodes (std ~120 on Pendulum); 100 more episodes of
    # the final greedy policy, from other start states, measure it ~3x more precisely.
    final, final_100, process_seconds = train_then_evaluate(PENDULUM, Path(tmp) / "run", seed, episodes=100)
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
  parser.add_argument(
    "--budget",
    type=int,
    default=None,
    help="env steps before giving up (default 100,000; with --sb3_python the Zoo's: DQN 50k, PPO 100k)",
  )
  parser.add_argument("--skip_time_to_solve", action="store_true")
  parser.add_argument("--skip_throughput", action="store_true")
  parser.add_argument("--pendulum", action="store_true", help="also PPO on Pendulum-v1 (each seed)")
  parser.add_argument(
    "--sb3_python", default=None, help="a Python with stable-baselines3 + rl_zoo3: time to solve against SB3"
  )
  parser.add_argument(
    "--sb3_torch_threads", type=int, default=0, help="SB3's torch threads; 0: PyTorch's default"
  )
  args = parser.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  agents = args.agents.split(",")
  if args.sb3_python and not set(agents) <= set(ZOO_BUDGETS):
    parser.error(f"--sb3_python compares {', '.join(ZOO_BUDGETS)} only")

  if args.sb3_python and not args.skip_time_to_solve:
    seeds = [int(s) for s in args.seeds.split(",")]
    compare_with_sb3(agents, seeds, args.sb3_python, args.sb3_torch_threads, args.budget)
  elif not args.skip_time_to_solve:
    print(f"== time to the first 10-episode greedy evaluation >= {SOLVED} (evaluated every 1,000 env steps)")
    for agent in agents:
      rows = [time_to_solve(agent, int(s), args.budget or 100_000) for s in args.seeds.split(",")]
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
