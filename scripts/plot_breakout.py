"""A Breakout run against Dopamine's DQN per 1M-frame iteration: figure, Markdown table, CSVs.

    python scripts/plot_breakout.py --root_dir=runs/breakout_dopamine --out_dir=docs/results

Writes, named after the run folder:
- <out_dir>/<run>_train.csv: train_metrics.jsonl (whole-game training returns per log interval);
- <out_dir>/<run>_eval.csv: metrics.jsonl (evaluations);
- <out_dir>/<run>_vs_dopamine.png: training return against frames, the run's mean per 1M-frame
  iteration, the reference's mean and 5-run min-max band, random play and the published end
  points (CleanRL, RL Zoo, Nature) that fall on the plotted range;
- <out_dir>/<run>_vs_reference.md: per iteration (Dopamine's unit: 250k agent steps = 1M frames)
  the mean return of all training games that ended in it beside the reference's mean, min and
  max and whether it lies inside, above or below that band; then the published end points.

The reference follows the run's gin file (read from the run's command.txt, or --gin_file):
gin/dqn_breakout_dopamine.gin -> Dopamine's current JAX DQN, gin/dqn_breakout_dopamine_legacy.gin
and gin/dqn_breakout_nature.gin -> Dopamine's legacy TensorFlow DQN, both from reference/.
--reference=PATH (with --agent for a file of several agents) overrides. A missing reference file
or agent is an error (exit code 2), never a figure without its reference.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipelines.errors import PipelineError  # noqa: E402
from pipelines.storage import run_folder as rf  # noqa: E402

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "reference"
RANDOM_SCORE = 1.7  # Breakout, random play (Mnih et al. 2015, Extended Data Table 2)
FRAMES_PER_ITERATION = 1_000_000  # Dopamine's iteration: 250k agent steps of 4 frames
REFERENCE_COLUMNS = ("iteration_0idx", "frames_end_M", "mean_train_return_5runs", "min", "max")


@dataclasses.dataclass(frozen=True)
class Reference:
  path: Path
  agent: str | None  # rows whose `agent` column holds this; None: DQN, or a file without that column
  label: str


CURRENT_DQN = Reference(
  REFERENCE_DIR / "dopamine_breakout_cnn_agents_train_returns.csv", "DQN", "Dopamine's current JAX DQN"
)
LEGACY_DQN = Reference(
  REFERENCE_DIR / "dopamine_breakout_dqn_train_returns.csv", None, "Dopamine's legacy TensorFlow DQN"
)
# The curve of the same protocol. The Nature protocol has no Dopamine curve of its own; it keeps
# the legacy one, which docs/results/ has compared it with from the start.
REFERENCE_BY_GIN = {
  "dqn_breakout_dopamine.gin": CURRENT_DQN,
  "dqn_breakout_dopamine_legacy.gin": LEGACY_DQN,
  "dqn_breakout_nature.gin": LEGACY_DQN,
}


@dataclasses.dataclass(frozen=True)
class Published:
  source: str
  value: float
  spread: str
  frames: int
  protocol: str


# reference/README.md lists these with their sources; none ships per-frame data.
PUBLISHED = (
  Published(
    "CleanRL dqn_atari.py",
    366.9,
    "+- 39.9, 3 seeds",
    40_000_000,  # 10M agent steps
    "training games; no sticky actions, life-loss terminal, Adam 1e-4",
  ),
  Published(
    "CleanRL dqn_atari_jax.py",
    377.8,
    "+- 34.9, 3 seeds",
    40_000_000,
    "training games; no sticky actions, life-loss terminal, Adam 1e-4",
  ),
  Published("RL Baselines3 Zoo DQN", 358.0, "", 40_000_000, "-"),
  Published(
    "Nature DQN (Mnih et al. 2015)",
    401.2,
    "",
    # The paper's "50 million frames (38 days of game experience)" counts agent steps: 38 days
    # at 60 Hz is ~197M emulator frames.
    200_000_000,
    "evaluation games at epsilon 0.05, not training games",
  ),
)


@dataclasses.dataclass(frozen=True)
class Iteration:
  """One 1M-frame iteration of the run beside the reference's statistics for it."""

  index: int  # holds frames (index, index + 1]M
  mean: float  # games-weighted mean training-game return
  games: int
  complete: bool  # the run went past the iteration's last frame
  reference: tuple[float, float, float] | None  # (mean, min, max) over the reference's runs

  @property
  def band(self) -> str:
    if self.reference is None:
      return "no reference"
    _, low, high = self.reference
    return "below" if self.mean < low else "above" if self.mean > high else "inside"


def write_csv(records: list[dict], path: Path) -> None:
  fields = list(dict.fromkeys(key for record in records for key in record))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(records)


def per_iteration(
  train: Sequence[dict], frames_per_iteration: int = FRAMES_PER_ITERATION
) -> dict[int, tuple[float, int]]:
  """{iteration: (mean training-game return, games)}; iteration i holds frames (i, i+1]M."""
  sums: dict[int, list[float]] = {}
  for record in train:
    if record.get("train_games") and record.get("train_game_return") is not None:
      iteration = (record["frames"] - 1) // frames_per_iteration
      total = sums.setdefault(iteration, [0.0, 0])
      total[0] += record["train_game_return"] * record["train_games"]
      total[1] += record["train_games"]
  return {i: (total / games, games) for i, (total, games) in sorted(sums.items())}


def run_gin_files(folder: rf.RunFolder) -> list[str]:
  """The --gin_file values of the run's first launch (command.txt), as typed."""
  path = folder.path(rf.COMMAND)
  lines = path.read_text().splitlines() if path.exists() else []
  args = shlex.split(lines[0]) if lines else []
  files = []
  for i, arg in enumerate(args):
    if arg.startswith("--gin_file="):
      files.append(arg.split("=", 1)[1])
    elif arg == "--gin_file" and i + 1 < len(args):  # absl also takes `--gin_file PATH`
      files.append(args[i + 1])
  return files


def select_reference(
  gin_files: Sequence[str], path: str | None = None, agent: str | None = None
) -> Reference:
  """The reference curve for a run of these gin files; `path` (--reference) overrides."""
  if path is not None:
    return Reference(Path(path), agent, Path(path).name)
  chosen = next((REFERENCE_BY_GIN[Path(f).name] for f in gin_files if Path(f).name in REFERENCE_BY_GIN), None)
  if chosen is None:
    what = f"gin file(s) {', '.join(gin_files)}" if gin_files else "a run without a known gin file"
    raise PipelineError(
      f"no reference curve for {what} (known: {', '.join(REFERENCE_BY_GIN)}); "
      "pass --gin_file=GIN or --reference=PATH"
    )
  return chosen if agent is None else dataclasses.replace(chosen, agent=agent)


def read_reference(reference: Reference) -> tuple[dict[int, tuple[float, float, float]], Reference]:
  """({iteration: (mean, min, max)}, the reference with the agent its rows are of, if the file
  names agents); a missing file, column or agent is a one-line error naming the file."""
  path = reference.path
  if not path.is_file():
    raise PipelineError(
      f"reference file not found: {path} (copy it into reference/ or pass --reference=PATH)"
    )
  with open(path, newline="") as f:
    # `#` lines: the comment convention of reference/ (classic_control.csv).
    reader = csv.DictReader(line for line in f if not line.startswith("#"))
    rows = list(reader)
    columns = reader.fieldnames or []
  missing = [c for c in REFERENCE_COLUMNS if c not in columns]
  if missing:
    raise PipelineError(f"reference file {path} lacks column(s) {', '.join(missing)}")
  if "agent" in columns:
    agents = list(dict.fromkeys(row["agent"] for row in rows))
    reference = dataclasses.replace(reference, agent=reference.agent or "DQN")  # this script's agent
    rows = [row for row in rows if row["agent"] == reference.agent]
    if not rows:
      raise PipelineError(
        f"reference file {path} has no rows for agent {reference.agent} (it has: {', '.join(agents)})"
      )
  elif reference.agent is not None:
    raise PipelineError(f"reference file {path} has no agent column, so no rows for agent {reference.agent}")
  if not rows:
    raise PipelineError(f"reference file {path} has no rows")
  try:
    table = {
      int(row["iteration_0idx"]): (
        float(row["mean_train_return_5runs"]),
        float(row["min"]),
        float(row["max"]),
      )
      for row in rows
    }
  except ValueError as e:
    raise PipelineError(f"reference file {path}: {e}") from None
  return table, reference


def compare(
  train: Sequence[dict], reference: dict[int, tuple[float, float, float]], frames: int
) -> list[Iteration]:
  """The run's iterations (those in which a training game ended) beside the reference's."""
  return [
    Iteration(i, mean, games, frames >= (i + 1) * FRAMES_PER_ITERATION, reference.get(i))
    for i, (mean, games) in per_iteration(train).items()
  ]


def _frames(frames: float) -> str:
  return f"{frames / 1e6:g}M"


def markdown(
  name: str, gin_files: Sequence[str], reference: Reference, rows: Sequence[Iteration], frames: int
) -> str:
  """The comparison as a Markdown page: iterations, a summary line, the published end points."""
  agent = f", agent {reference.agent}" if reference.agent else ""
  lines = [
    f"# {name}: training-game return per 1M-frame iteration vs {reference.label}",
    "",
    f"Run `{name}` ({', '.join(gin_files) or 'gin file unknown'}), {frames:,} frames "
    f"({frames // 4:,} agent steps). Reference: {reference.label}, `{reference.path.name}`{agent}: "
    "mean, min and max over its 5 runs of the training-game return in each iteration. This run: "
    "mean return of the training games (unclipped, all lives) that ended in the iteration, "
    "weighted by games. Band: where this run's mean lies against the reference's min-max.",
    "",
    "| iteration | frames | this run (games) | reference mean | min | max | this run / mean | band |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for row in rows:
    span = f"{row.index}-{row.index + 1}M" + ("" if row.complete else f" (partial, to {frames / 1e6:.2f}M)")
    if row.reference is None:
      ref = "- | - | - | -"
    else:
      mean, low, high = row.reference
      ref = f"{mean:.2f} | {low:.2f} | {high:.2f} | {row.mean / mean:.2f}x"
    lines.append(f"| {row.index} | {span} | {row.mean:.2f} ({row.games:,}) | {ref} | {row.band} |")
  complete = [r for r in rows if r.complete and r.reference is not None]
  below = [f"{r.index}-{r.index + 1}M" for r in complete if r.band == "below"]
  lines += [
    "",
    f"Complete iterations inside or above the band: {len(complete) - len(below)} of {len(complete)}"
    + (f"; below: {', '.join(below)}." if below else "."),
    "",
    "## Published end points",
    "",
    "| source | return | at | protocol | this run there |",
    "| --- | --- | --- | --- | --- |",
  ]
  means = {r.index: r for r in rows}
  for point in PUBLISHED:
    last = means.get(point.frames // FRAMES_PER_ITERATION - 1)
    if frames >= point.frames and last is not None:
      there = f"{last.mean:.2f} (iteration {last.index})"
    else:
      there = f"not reached (run at {frames / 1e6:.2f}M frames)"
    value = f"{point.value:g}" + (f" ({point.spread})" if point.spread else "")
    at = f"{_frames(point.frames)} frames ({_frames(point.frames // 4)} agent steps)"
    lines.append(f"| {point.source} | {value} | {at} | {point.protocol} | {there} |")
  return "\n".join(lines) + "\n"


def figure(
  train: Sequence[dict],
  rows: Sequence[Iteration],
  reference: dict[int, tuple[float, float, float]],
  label: str,
  path: Path,
  title: str,
) -> None:
  """Training return against frames beside the reference band and the published end points."""
  intervals = [r for r in train if r.get("train_games")]
  run_end = max((r["frames"] for r in intervals), default=0) / 1e6
  limit = max(2.0, run_end * 1.5 + 1)  # the run's range, with room to see where the reference goes
  fig, ax = plt.subplots(figsize=(8, 4.5))
  if intervals:
    x = np.array([r["frames"] for r in intervals]) / 1e6
    ax.plot(
      x,
      [r["train_game_return"] for r in intervals],
      "-",
      color="tab:blue",
      alpha=0.35,
      lw=1,
      label="this run (games finished in each log interval)",
    )
  if rows:
    ax.plot(
      [r.index + 1 for r in rows],
      [r.mean for r in rows],
      "o-",
      color="tab:blue",
      label="this run (per 1M-frame iteration)",
    )
  shown = sorted(i for i in reference if i + 1 <= limit)
  if shown:
    ref_x = np.array(shown) + 1  # plotted at the iteration's last frame, as the run's means
    ref = np.array([reference[i] for i in shown])
    ax.plot(ref_x, ref[:, 0], "s-", color="tab:gray", label=f"{label} (5 runs, mean and min-max)")
    ax.fill_between(ref_x, ref[:, 1], ref[:, 2], color="tab:gray", alpha=0.2)
  ax.axhline(RANDOM_SCORE, color="tab:red", ls="--", lw=1, label=f"random play ({RANDOM_SCORE})")
  for point, color in zip(PUBLISHED, ("tab:green", "tab:olive", "tab:purple", "tab:brown"), strict=True):
    if point.frames / 1e6 <= limit:
      ax.axhline(point.value, color=color, ls=":", lw=1)
      ax.plot(
        point.frames / 1e6,
        point.value,
        "*",
        color=color,
        markersize=10,
        label=f"{point.source}: {point.value:g} at {_frames(point.frames)} frames",
      )
  ax.set_xlabel("frames (millions; 1 agent step = 4 frames)")
  ax.set_ylabel("training game return (unclipped, all lives)")
  ax.set_title(title)
  ax.set_xlim(0, limit)
  ax.grid(alpha=0.3)
  ax.legend(loc="upper left", fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_comparison(
  folder: rf.RunFolder, out: Path, gin_files: Sequence[str], reference: Reference
) -> tuple[list[Iteration], str]:
  """Writes the CSVs, the figure and the Markdown table; returns the rows and the Markdown."""
  table, reference = read_reference(reference)  # first: a missing reference writes nothing
  out.mkdir(parents=True, exist_ok=True)
  name = folder.root.name
  train = folder.read_metrics(rf.TRAIN_METRICS)
  evals = folder.read_metrics()
  if train:
    write_csv(train, out / f"{name}_train.csv")
  if evals:
    write_csv(evals, out / f"{name}_eval.csv")
  frames = max((r.get("frames", 0) for r in train + evals), default=0)
  rows = compare(train, table, frames)
  title = f"DQN Breakout ({name}): {frames / 1e6:.2f}M frames"
  figure(train, rows, table, reference.label, out / f"{name}_vs_dopamine.png", title)
  text = markdown(name, gin_files, reference, rows, frames)
  (out / f"{name}_vs_reference.md").write_text(text)
  return rows, text


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root_dir", required=True, help="the run folder")
  parser.add_argument("--out_dir", default="docs/results", help="where the CSVs, figure and table go")
  parser.add_argument(
    "--gin_file", action="append", help="the run's gin file (default: from its command.txt)"
  )
  parser.add_argument("--reference", help="reference CSV (default: by gin file, from reference/)")
  parser.add_argument("--agent", help="rows of this agent in a reference of several (default: DQN)")
  args = parser.parse_args(argv)
  try:
    folder = rf.RunFolder(args.root_dir)
    gin_files = args.gin_file or run_gin_files(folder)
    reference = select_reference(gin_files, args.reference, args.agent)
    rows, text = write_comparison(folder, Path(args.out_dir), gin_files, reference)
  except (PipelineError, OSError) as e:
    print(f"plot_breakout: error: {str(e).splitlines()[0]}", file=sys.stderr)
    return 2
  print(text, end="")
  print(f"{folder.root.name}: reference {reference.path}; {len(rows)} iterations -> {args.out_dir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
