"""Learning curve of a Breakout run against Dopamine's DQN, and its metrics as CSV.

    python scripts/plot_breakout.py --root_dir=runs/breakout_nature --out_dir=docs/results

Writes <out_dir>/<run>_train.csv (train_metrics.jsonl: whole-game training returns per log
interval), <out_dir>/<run>_eval.csv (metrics.jsonl: evaluations) and
<out_dir>/<run>_vs_dopamine.png (training return vs frames with the reference curve).
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
  print(f"{name}: {frames} frames, {len(train)} training records, {len(evals)} evaluations -> {out}")


if __name__ == "__main__":
  main()
