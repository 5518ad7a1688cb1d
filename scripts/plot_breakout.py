"""Learning curve of a Breakout run against Dopamine's DQN, and its metrics as CSV.

    python scripts/plot_breakout.py --root_dir=runs/breakout_nature --out_dir=docs/results

Writes <out_dir>/<run>_train.csv (train_metrics.jsonl: whole-game training returns per log
interval), <out_dir>/<run>_eval.csv (metrics.jsonl: evaluations) and
<out_dir>/<run>_vs_dopamine.png (training return vs frames with the reference curve), and
prints the comparison at matched frames: per 1M-frame iteration (Dopamine's unit), the mean
return of all training games that ended in it beside Dopamine's mean and min-max.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipelines import plots  # noqa: E402
from pipelines import run_folder as rf  # noqa: E402

# The shared reference data sits beside the checkout (../shared/reference/).
REFERENCE = Path(__file__).resolve().parents[2] / "shared/reference/dopamine_breakout_dqn_train_returns.csv"
RANDOM_SCORE = 1.7  # Breakout, random play (Mnih et al. 2015, Extended Data Table 2)


def write_csv(records: list[dict], path: Path) -> None:
  fields = list(dict.fromkeys(key for record in records for key in record))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(records)


def per_iteration(train: list[dict], frames_per_iteration: int = 1_000_000) -> dict[int, tuple[float, int]]:
  """{iteration: (mean training-game return, games)}; iteration i holds frames (i, i+1]M."""
  sums: dict[int, list[float]] = {}
  for record in train:
    if record.get("train_games") and record.get("train_game_return") is not None:
      iteration = (record["frames"] - 1) // frames_per_iteration
      total = sums.setdefault(iteration, [0.0, 0])
      total[0] += record["train_game_return"] * record["train_games"]
      total[1] += record["train_games"]
  return {i: (total / games, games) for i, (total, games) in sorted(sums.items())}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root_dir", required=True)
  parser.add_argument("--out_dir", default="docs/results")
  parser.add_argument("--reference", default=str(REFERENCE))
  args = parser.parse_args()

  folder = rf.RunFolder(args.root_dir)
  out = Path(args.out_dir)
  out.mkdir(parents=True, exist_ok=True)
  name = Path(args.root_dir).name
  train = folder.read_metrics(rf.TRAIN_METRICS)
  evals = folder.read_metrics()
  if train:
    write_csv(train, out / f"{name}_train.csv")
  if evals:
    write_csv(evals, out / f"{name}_eval.csv")
  reference = list(csv.DictReader(open(args.reference))) if Path(args.reference).exists() else []
  frames = max((r.get("frames", 0) for r in train + evals), default=0)
  plots.atari_training_curve(
    train,
    out / f"{name}_vs_dopamine.png",
    reference=reference,
    random_score=RANDOM_SCORE,
    title=f"DQN Breakout ({name}): {frames / 1e6:.2f}M frames",
  )
  print("iteration (M frames) | this run: mean training-game return (games) | Dopamine mean [min, max]")
  rows = {int(r["iteration_0idx"]): r for r in reference}
  for i, (mean, games) in per_iteration(train).items():
    ref = rows.get(i)
    dopamine = f"{ref['mean_train_return_5runs']} [{ref['min']}, {ref['max']}]" if ref else "-"
    print(f"{i}-{i + 1}M | {mean:.2f} ({games}) | {dopamine}")
  print(f"{name}: {frames} frames, {len(train)} training records, {len(evals)} evaluations -> {out}")


if __name__ == "__main__":
  main()
