"""LunarLander-v3 after the RL Baselines3 Zoo's budgets: median greedy return over seeds.

    .venv/bin/pip install -e ".[box2d]"
    .venv/bin/python scripts/bench_lunarlander.py --agents=dqn --seeds=0,1,2
    .venv/bin/python scripts/bench_lunarlander.py --agents=ppo --seeds=0 --budget=32768  # rate only

Each agent's experiment file (gin/dqn_lunarlander.gin: 100k env steps; gin/ppo_lunarlander.gin:
1M) runs through the real CLI per seed to its whole budget; then `pipelines-evaluate` plays
`--num_episodes` (default 100) greedy episodes of the final policy. Prints one JSON line per
seed (the run's last 10-episode evaluation, the N-episode mean, env steps/s excluding
evaluation time, seconds) and, per agent, the median over seeds of the N-episode means next to
the Zoo's benchmark.md figure (DQN 154.4 after 100k, PPO 242.1 after 1M, LunarLander-v2, one
trained agent each, deterministic episodes). `--budget=N` stops each run at N env steps instead
(a rate measurement) and prints the projected time of the whole budget at the measured rate;
`--eval_interval` spaces the runs' own evaluations (they cost as much as training here).
Run folders are kept in `--root_dir` (default runs/bench_lunarlander/<agent>_seed<N>); a
finished run is not trained again (its evaluation is), so an interrupted benchmark resumes.
The load average is printed at start and end: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from bench_runs import train_then_evaluate

EXPERIMENTS = {"dqn": "gin/dqn_lunarlander.gin", "ppo": "gin/ppo_lunarlander.gin"}
BUDGETS = {"dqn": 100_000, "ppo": 1_000_000}  # env steps: the Zoo's n_timesteps
ZOO_SCORES = {"dqn": 154.382, "ppo": 242.119}  # benchmark.md, LunarLander-v2


def train_and_evaluate(agent: str, seed: int, budget: int, root: Path, episodes: int, eval_interval) -> dict:
  bindings = [f"run_experiment.num_env_steps = {budget}"]
  if eval_interval:
    bindings.append(f"run_experiment.eval_interval = {eval_interval}")
  final, evaluation, process_seconds = train_then_evaluate(EXPERIMENTS[agent], root, seed, bindings, episodes)
  train_seconds = final["wall_seconds"] - final["eval_seconds"]
  return {
    "agent": agent,
    "seed": seed,
    "env_steps": final["env_steps"],
    "last_eval_10_episodes": round(final["average_return"], 1),
    f"greedy_return_{episodes}_episodes": round(evaluation["average_return"], 1),
    "greedy_return_std": round(evaluation["return_std"], 1),
    "env_steps_per_second": round(final["env_steps"] / train_seconds, 1),
    "seconds_incl_eval": final["wall_seconds"],
    "seconds_excl_eval": round(train_seconds, 1),
    "process_seconds": round(process_seconds, 1),  # 0-ish when the run had already finished
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--agents", default="dqn,ppo", help="comma-separated: dqn, ppo")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--budget", type=int, default=None, help="env steps per run (default: the Zoo's)")
  parser.add_argument("--num_episodes", type=int, default=100, help="greedy episodes of the final policy")
  parser.add_argument("--root_dir", default="runs/bench_lunarlander")
  parser.add_argument(
    "--eval_interval",
    type=int,
    default=None,
    help="env steps between the runs' own 10-episode evaluations (default: the gin file's); "
    "a LunarLander evaluation costs up to 10,000 env steps of the greedy policy",
  )
  args = parser.parse_args()
  print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
  for agent in args.agents.split(","):
    budget = args.budget or BUDGETS[agent]
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
      suffix = "" if args.budget is None else f"_budget{budget}"
      root = Path(args.root_dir) / f"{agent}_seed{seed}{suffix}"
      row = train_and_evaluate(agent, seed, budget, root, args.num_episodes, args.eval_interval)
      print(json.dumps(row), flush=True)
      rows.append(row)
    rate = statistics.median(r["env_steps_per_second"] for r in rows)
    summary = {
      "agent": agent,
      "env_steps": budget,
      "seeds": len(rows),
      f"median_greedy_return_{args.num_episodes}_episodes": statistics.median(
        r[f"greedy_return_{args.num_episodes}_episodes"] for r in rows
      ),
      "zoo_benchmark": ZOO_SCORES[agent] if budget == BUDGETS[agent] else None,
      "median_env_steps_per_second": rate,
      "projected_hours_for_the_zoo_budget": round(BUDGETS[agent] / rate / 3600, 2),
    }
    print(json.dumps(summary), flush=True)
  print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
  main()
