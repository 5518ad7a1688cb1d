"""SAC and TD3 on Pendulum-v1: greedy return after the RL Zoo's 20k env steps, and env steps/s.

    nice .venv/bin/python scripts/bench_continuous.py                         # sac, td3; seeds 0-2
    nice .venv/bin/python scripts/bench_continuous.py --agents=td3 --seeds=0 --budget=5000

Each (agent, seed) runs its experiment file (gin/sac_pendulum.gin, gin/td3_pendulum.gin,
gin/ddpg_pendulum.gin: the Zoo's settings and budget) through the real CLI, seeds
interleaved so that a slow spell of the shared machine hits both agents. Per run it prints
the run's last 10-episode greedy mean, the mean of 100 more greedy episodes of the final
policy (`pipelines-evaluate --num_episodes=100`: 10 episodes of Pendulum have a std of
~60-100, 100 measure it ~3x more precisely), and env steps/s with and without evaluation
time (the run's clock: TensorFlow's start-up, tracing and XLA compilation excluded); then
the medians over seeds. RL Zoo's benchmark.md for the same budget: SAC -157 +- 89, TD3
-152 +- 90 (mean +- std over its evaluation episodes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from bench_runs import train_then_evaluate

EXPERIMENTS = {
  "sac": "gin/sac_pendulum.gin",
  "td3": "gin/td3_pendulum.gin",
  "ddpg": "gin/ddpg_pendulum.gin",
}
TARGET = -200.0  # issue 17's bar for the median over seeds


def run(agent: str, seed: int, budget: int | None) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    bindings = [f"run_experiment.num_env_steps = {budget}"] if budget else []
    final, final_100, process_seconds = train_then_evaluate(
      EXPERIMENTS[agent], Path(tmp) / "run", seed, bindings, episodes=100
    )
  train_seconds = final["wall_seconds"] - final["eval_seconds"]
  return {
    "agent": agent,
    "seed": seed,
    "env_steps": final["env_steps"],
    "return_10": round(final["average_return"], 1),
    "return_100": round(final_100["average_return"], 1),
    "return_100_std": round(final_100["return_std"], 1),
    "env_steps_per_s": round(final["env_steps"] / final["wall_seconds"], 1),
    "env_steps_per_s_excl_eval": round(final["env_steps"] / train_seconds, 1),
    "process_seconds": round(process_seconds, 1),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--agents", default="sac,td3", help="comma-separated: " + ",".join(EXPERIMENTS))
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--budget", type=int, default=None, help="env steps (default: the gin file's)")
  args = parser.parse_args()
  agents = args.agents.split(",")
  seeds = [int(s) for s in args.seeds.split(",")]
  print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
  rows = {agent: [] for agent in agents}
  for seed in seeds:
    for agent in agents:
      row = run(agent, seed, args.budget)
      rows[agent].append(row)
      print(json.dumps(row), flush=True)
  for agent, agent_rows in rows.items():
    medians = {
      key: statistics.median(r[key] for r in agent_rows)
      for key in ("return_10", "return_100", "env_steps_per_s", "env_steps_per_s_excl_eval")
    }
    verdict = "meets" if medians["return_100"] >= TARGET else "misses"
    print(f"{agent}: median over {len(agent_rows)} seeds {json.dumps(medians)} ({verdict} {TARGET})")
  print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
  main()
