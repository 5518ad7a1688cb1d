"""What the learning benchmarks share: train one seed through the real CLI, then play greedy
episodes of its final policy with `pipelines-evaluate`.

    from bench_runs import train_then_evaluate   # in a script under scripts/
    final, evaluation, seconds = train_then_evaluate("gin/sac_pendulum.gin", root, seed=0, episodes=100)

Used by bench_cartpole.py (PPO Pendulum), bench_continuous.py and bench_lunarlander.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(command: list[str]) -> subprocess.CompletedProcess:
  """Runs a command in the repository; raises with its command and stderr's tail if it fails."""
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(command)}\n{result.stderr[-2000:]}")
  return result


def train_then_evaluate(
  gin_file: str, root: Path, seed: int, bindings: Sequence[str] = (), episodes: int = 100
) -> tuple[dict, dict, float]:
  """`pipelines-train` of `gin_file` with `build_components.seed = seed` (plus `bindings`) into
  `root`, then `pipelines-evaluate --num_episodes=episodes` of its final policy.

  Returns the run's last metrics.jsonl record (its own last evaluation, wall and evaluation
  seconds), the evaluation's JSON summary, and the training process's seconds (start-up,
  tracing and teardown included; ~0 when `root` already held the finished run, which is
  then only evaluated, so an interrupted benchmark resumes).
  """
  command = [
    sys.executable, "-m", "pipelines.train", f"--gin_file={gin_file}", f"--root_dir={root}",
    f"--gin_bindings=build_components.seed = {seed}", *(f"--gin_bindings={b}" for b in bindings),
  ]  # fmt: skip
  start = time.perf_counter()
  run_cli(command)
  process_seconds = time.perf_counter() - start
  final = json.loads((Path(root) / "metrics.jsonl").read_text().splitlines()[-1])
  evaluate = [sys.executable, "-m", "pipelines.evaluate", f"--root_dir={root}", f"--num_episodes={episodes}"]
  evaluation = json.loads(run_cli(evaluate).stdout.strip().splitlines()[-1])
  return final, evaluation, process_seconds
