"""Plots of a run's evaluations: return against environment steps (or frames).

    python -c "from pipelines import plots, run_folder as rf; \
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
