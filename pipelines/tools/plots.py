"""Plots of a run's evaluations: return against environment steps (or frames).

    python -c "from pipelines.tools import plots; from pipelines.storage import run_folder as rf; \
        plots.learning_curve(rf.RunFolder('runs/x').read_metrics(), 'curve.png')"
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def learning_curve(
  records: Sequence[dict], path: str | Path, x_key: str = "env_steps", title: str = ""
) -> None:
  """Mean evaluation return with a +-1 std band over the episodes of each evaluation."""
  if not records:
    return
  x = np.array([r[x_key] for r in records])
  mean = np.array([r["average_return"] for r in records])
  std = np.array([r.get("return_std", 0.0) for r in records])
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.plot(x, mean, label="evaluation return (mean)")
  ax.fill_between(x, mean - std, mean + std, alpha=0.25, label="+-1 std over episodes")
  ax.set_xlabel(x_key.replace("_", " "))
  ax.set_ylabel("return")
  ax.set_title(title or Path(path).parent.name)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def atari_training_curve(
  records: Sequence[dict],
  path: str | Path,
  reference: Sequence[dict] = (),
  reference_label: str = "Dopamine DQN (5 runs, mean and min-max)",
  random_score: float | None = None,
  title: str = "",
) -> None:
  """Whole-game training return against frames (millions), beside a published reference.

  records: train_metrics.jsonl records (`frames`, `train_game_return`, `train_games`);
  reference: rows with `frames_end_M`, `mean_train_return_5runs`, `min`, `max` (Dopamine's
  per-iteration means, each over the 1M frames ending there).
  """
  rows = [r for r in records if r.get("train_games")]
  fig, ax = plt.subplots(figsize=(7, 4))
  if rows:
    x = np.array([r["frames"] for r in rows]) / 1e6
    y = np.array([r["train_game_return"] for r in rows])
    ax.plot(x, y, ".-", label="this pipeline (games finished in each log interval)")
  if reference:
    ref_x = np.array([float(r["frames_end_M"]) for r in reference])
    limit = max(2.0, (x.max() if rows else 0) * 1.5 + 1)
    keep = ref_x <= limit
    ref_y = np.array([float(r["mean_train_return_5runs"]) for r in reference])[keep]
    low = np.array([float(r["min"]) for r in reference])[keep]
    high = np.array([float(r["max"]) for r in reference])[keep]
    ax.plot(ref_x[keep], ref_y, "s-", color="tab:gray", label=reference_label)
    ax.fill_between(ref_x[keep], low, high, color="tab:gray", alpha=0.2)
  if random_score is not None:
    ax.axhline(random_score, color="tab:red", ls="--", lw=1, label=f"random play ({random_score})")
  ax.set_xlabel("frames (millions; 1 agent step = 4 frames)")
  ax.set_ylabel("training game return (unclipped, all lives)")
  ax.set_title(title)
  ax.set_xlim(left=0)
  ax.grid(alpha=0.3)
  ax.legend(loc="upper left", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
