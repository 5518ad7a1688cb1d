"""Summarise runs: learning curves with bootstrap bands, rliable aggregates, a Markdown table.

    pipelines-report runs/sweep1
    pipelines-report runs/sweep1 --reference=reference/classic_control.csv --out=reports/sweep1
    python -m pipelines.report runs/atari_pong --x=frames

Any folder holding run folders (anything with a `metrics.jsonl`: a sweep, single runs,
distributed or Atari runs) or one run folder. Runs whose folder names differ only in a
`seed=N` part are seeds of one configuration. A run's score is the mean return of its
last evaluation. Aggregates follow Agarwal et al. 2021 ("Deep RL at the edge of the
statistical precipice") through their library, rliable: IQM, mean, median and
optimality gap with 95% stratified bootstrap CIs over runs, performance profiles, and
the probability that the best configuration (by IQM) improves on each other one.
With `--reference` (CSV: task,random,reference; `#` comments) scores are normalised per task to
(score - random) / (reference - random), which the optimality gap needs (gap to 1).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import flags

from pipelines import cli
from pipelines.errors import PipelineError
from pipelines.storage import run_folder as rf

FIGURES = {
  "curves": "learning_curves.png",
  "aggregates": "aggregates.png",
  "profile": "performance_profile.png",
  "improvement": "probability_of_improvement.png",
}
SUMMARY = "report.md"
TABLE = "aggregates.csv"
NUMBERS = "aggregates.json"  # every estimate and bound, for scripts and tests
PAIR = ";"  # joins two configuration names (which may hold commas: "fc=(64,64)")
_SEED_PART = re.compile(r"(^|__)seed=\d+$")
_TASK = re.compile(r"^[\w/.]*\.(?:env_id|game)\s*=\s*['\"]([^'\"]+)", re.MULTILINE)


def define_flags() -> None:
  """Flags are defined on demand: importing this module (tests do) must not clash with
  the other tools' flags of the same name."""
  flags.DEFINE_string("out", None, "Report folder (default: <first folder>/report).")
  flags.DEFINE_string("reference", None, "CSV with columns task,random,reference to normalise scores.")
  flags.DEFINE_enum("x", "env_steps", ["env_steps", "frames"], "Learning-curve axis; frames: Atari runs.")
  flags.DEFINE_integer("reps", 2_000, "Bootstrap replications per estimate.")
  flags.DEFINE_integer("seed", 0, "Seed of the bootstrap (reports are reproducible).")


FLAGS = flags.FLAGS


@dataclasses.dataclass
class RunData:
  path: Path
  config: str
  task: str
  records: list[dict]

  @property
  def score(self) -> float:
    return float(self.records[-1]["average_return"])


def _config_label(run_dir: Path, base: Path, prefix: str) -> str:
  parts = [p for p in run_dir.relative_to(base).parts]
  parts = [_SEED_PART.sub("", p) for p in parts]
  label = "/".join(p for p in parts if p)
  label = "/".join(p for p in (prefix, label) if p)
  return label or base.name


def _task(run_dir: Path) -> str:
  config = run_dir / rf.OPERATIVE_CONFIG
  match = _TASK.search(config.read_text()) if config.exists() else None
  return match.group(1) if match else "task"


def find_runs(paths: Sequence[str | Path]) -> tuple[list[RunData], list[str]]:
  """Every run folder under `paths` with at least one evaluation; notes on those skipped."""
  runs, notes = [], []
  for given in paths:
    base = Path(given).expanduser().absolute()
    if not base.is_dir():
      raise PipelineError(f"no such folder: {given}")
    prefix = base.name if len(paths) > 1 else ""
    for metrics in sorted(base.rglob(rf.METRICS)):
      run_dir = metrics.parent
      records = rf.RunFolder(run_dir).read_metrics()
      if not records:
        notes.append(f"{run_dir}: no evaluation yet, left out")
        continue
      runs.append(RunData(run_dir, _config_label(run_dir, base, prefix), _task(run_dir), records))
  if not runs:
    raise PipelineError(
      f"no runs found under {', '.join(map(str, paths))} (no {rf.METRICS} with an evaluation)"
    )
  return runs, notes


def load_reference(path: str) -> dict[str, tuple[float, float]]:
  try:
    with open(path, newline="") as f:
      rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    reference = {row["task"]: (float(row["random"]), float(row["reference"])) for row in rows}
  except (KeyError, ValueError, TypeError) as e:
    raise PipelineError(f"--reference {path}: expected CSV columns task,random,reference ({e})") from None
  bad = [task for task, (low, high) in reference.items() if high == low]
  if bad:
    raise PipelineError(f"--reference {path}: random equals reference for {bad[0]}")
  return reference


class Scores:
  """Final scores as rliable wants them: {configuration: array[runs, tasks]}."""

  def __init__(self, runs: Sequence[RunData], reference: dict | None):
    self.tasks = sorted({run.task for run in runs})
    self.configs = sorted({run.config for run in runs})
    self.notes: list[str] = []
    if reference is not None:
      missing = [t for t in self.tasks if t not in reference]
      if missing:
        raise PipelineError(f"task {missing[0]} is not in --reference (it has {', '.join(reference)})")
    self.reference = reference
    self.matrices = {}
    for config in self.configs:
      columns = [
        [self.normalise(r.score, task) for r in runs if r.config == config and r.task == task]
        for task in self.tasks
      ]
      present = [c for c in columns if c]
      n = min(len(c) for c in present)
      if len(present) < len(self.tasks):
        self.notes.append(f"{config}: no runs on some tasks; its aggregates use the tasks it has")
      if any(len(c) != n for c in present):
        self.notes.append(f"{config}: unequal runs per task; the first {n} of each are used")
      self.matrices[config] = np.array([c[:n] for c in present]).T

  def normalise(self, value: float, task: str) -> float:
    if self.reference is None:
      return value
    low, high = self.reference[task]
    return (value - low) / (high - low)


def aggregates(matrices: dict, normalised: bool, reps: int, seed: int) -> dict:
  """rliable's stratified bootstrap: {config: {metric: (estimate, low, high)}}."""
  from rliable import library, metrics

  names = ["IQM", "Mean", "Median"] + (["Optimality Gap"] if normalised else [])
  functions = [metrics.aggregate_iqm, metrics.aggregate_mean, metrics.aggregate_median]
  functions += [metrics.aggregate_optimality_gap] if normalised else []
  aggregate = lambda scores: np.array([f(scores) for f in functions])
  points, intervals = library.get_interval_estimates(
    matrices, aggregate, reps=reps, random_state=np.random.RandomState(seed)
  )
  return {
    config: {
      name: (float(points[config][i]), float(intervals[config][0, i]), float(intervals[config][1, i]))
      for i, name in enumerate(names)
    }
    for config in matrices
  }


def improvement(matrices: dict, best: str, reps: int, seed: int) -> dict:
  """P(best > other) with CIs, for each other configuration."""
  from rliable import library, metrics

  pairs = {f"{best}{PAIR}{other}": (matrices[best], matrices[other]) for other in matrices if other != best}
  if not pairs:
    return {}
  points, intervals = library.get_interval_estimates(
    pairs,
    lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
    reps=reps,
    random_state=np.random.RandomState(seed),
  )
  return {
    pair: (float(points[pair][0]), float(intervals[pair][0, 0]), float(intervals[pair][1, 0]))
    for pair in pairs
  }


def curve(runs: Sequence[RunData], x_key: str, reps: int, seed: int):
  """Mean return over runs on the union of their evaluation points, with a 95% bootstrap band.

  Runs evaluated at other points are interpolated; a run that stopped early (target
  return reached) holds its last evaluation to the end of the longest run.
  """
  from rliable import library

  xs = [np.array([r[x_key] for r in run.records], dtype=float) for run in runs]
  ys = [np.array([r["average_return"] for r in run.records], dtype=float) for run in runs]
  grid = np.unique(np.concatenate(xs))
  values = np.stack([np.interp(grid, x, y) for x, y in zip(xs, ys, strict=True)])[
    :, None, :
  ]  # runs, 1, points
  points, intervals = library.get_interval_estimates(
    {"c": values}, lambda s: s.mean(axis=(0, 1)), reps=reps, random_state=np.random.RandomState(seed)
  )
  return grid, points["c"], intervals["c"][0], intervals["c"][1]


def _display(config: str) -> str:
  return config.replace("__", ", ")


def plot_curves(runs, scores: Scores, x_key: str, reps: int, seed: int, path: Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(scores.tasks), figsize=(7 * len(scores.tasks), 4.5), squeeze=False)
  for ax, task in zip(axes[0], scores.tasks, strict=True):
    for i, config in enumerate(scores.configs):
      group = [r for r in runs if r.config == config and r.task == task]
      if not group:
        continue
      grid, mean, low, high = curve(group, x_key, reps, seed)
      color = f"C{i % 10}"
      ax.plot(grid, mean, color=color, label=f"{_display(config)} (n={len(group)})")
      ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
    ax.set_title(f"{task}: mean evaluation return, 95% bootstrap CI over runs", fontsize=10)
    ax.set_xlabel(x_key.replace("_", " "))
    ax.set_ylabel("return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_aggregates(numbers: dict, normalised: bool, path: Path) -> None:
  import matplotlib.pyplot as plt
  from rliable import plot_utils

  configs = list(numbers)
  names = list(next(iter(numbers.values())))
  points = {c: np.array([numbers[c][m][0] for m in names]) for c in configs}
  intervals = {
    c: np.array([[numbers[c][m][1] for m in names], [numbers[c][m][2] for m in names]]) for c in configs
  }
  fig, _ = plot_utils.plot_interval_estimates(
    points,
    intervals,
    metric_names=names,
    algorithms=configs,
    xlabel="normalised score" if normalised else "return",
    subfigure_width=3.6,
    row_height=max(0.5, 1.6 / len(configs)),  # few rows: keep room for ticks and label
    max_ticks=3,
    xlabel_y_coordinate=-0.3 if len(configs) < 4 else -0.1,
  )
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)


def plot_profile(matrices: dict, normalised: bool, reps: int, path: Path) -> None:
  import matplotlib.pyplot as plt
  from rliable import library, plot_utils

  every = np.concatenate([m.ravel() for m in matrices.values()])
  taus = np.linspace(min(every.min(), 0.0), every.max() * 1.02 + 1e-9, 81)
  profiles, cis = library.create_performance_profile(matrices, taus, reps=reps)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  plot_utils.plot_performance_profiles(
    profiles,
    taus,
    performance_profile_cis=cis,
    xlabel=r"normalised score $\tau$" if normalised else r"return $\tau$",
    ylabel=r"fraction of runs with score $> \tau$",
    ax=ax,
    legend=True,
  )
  ax.legend(fontsize=8, loc="lower left")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_improvement(probabilities: dict, path: Path) -> None:
  import matplotlib.pyplot as plt
  from rliable import plot_utils

  points = {pair: np.array([v[0]]) for pair, v in probabilities.items()}
  intervals = {pair: np.array([[v[1]], [v[2]]]) for pair, v in probabilities.items()}
  ax = plot_utils.plot_probability_of_improvement(
    points, intervals, pair_separator=PAIR, figsize=(6, 0.6 + 0.5 * len(points))
  )
  ax.set_xlim(-0.02, 1.02)  # a probability: autoscaling zooms into 0.96..1.04 when all are 1
  ax.figure.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(ax.figure)


def _number(value: float) -> str:
  """Returns of hundreds and thousands (MuJoCo, Atari) to one decimal: `.3g` wrote 3995.1 as
  4e+03; normalised scores and probabilities keep three significant digits."""
  return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"


def _ci(value: tuple[float, float, float]) -> str:
  return f"{_number(value[0])} [{_number(value[1])}, {_number(value[2])}]"


def write_report(
  paths: Sequence[str], out: Path, reference_path: str | None, x_key: str, reps: int, seed: int
):
  runs, notes = find_runs(paths)
  missing_x = [r.path for r in runs if any(x_key not in rec for rec in r.records)]
  if missing_x:
    raise PipelineError(f"--x={x_key}: {missing_x[0]} has no {x_key!r} in {rf.METRICS} (frames: Atari runs)")
  reference = load_reference(reference_path) if reference_path else None
  scores = Scores(runs, reference)
  normalised = reference is not None
  try:
    out.mkdir(parents=True, exist_ok=True)
    (out / NUMBERS).write_text("")
  except OSError as e:
    raise PipelineError(f"cannot write the report to {out}: {e.strerror or e}") from None

  numbers = aggregates(scores.matrices, normalised, reps, seed)
  best = max(numbers, key=lambda c: numbers[c]["IQM"][0])
  probabilities = improvement(scores.matrices, best, reps, seed)
  plot_curves(runs, scores, x_key, reps, seed, out / FIGURES["curves"])
  plot_aggregates(numbers, normalised, out / FIGURES["aggregates"])
  plot_profile(scores.matrices, normalised, reps, out / FIGURES["profile"])
  if probabilities:
    plot_improvement(probabilities, out / FIGURES["improvement"])

  metric_names = list(numbers[best])
  with open(out / TABLE, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(
      ["configuration", "runs"] + [f"{m} {p}".strip() for m in metric_names for p in ("", "low", "high")]
    )
    for config in scores.configs:
      writer.writerow(
        [config, scores.matrices[config].shape[0]] + [v for m in metric_names for v in numbers[config][m]]
      )
  rf.atomic_write_text(
    out / NUMBERS,
    json.dumps(
      {
        "score": "normalised final return" if normalised else "final return",
        "tasks": scores.tasks,
        "aggregates": numbers,
        "probability_of_improvement": probabilities,
        "scores": {c: m.tolist() for c, m in scores.matrices.items()},
        "runs": {str(r.path): {"config": r.config, "task": r.task, "score": r.score} for r in runs},
      },
      indent=2,
    )
    + "\n",
  )
  summary = _markdown(paths, runs, scores, numbers, probabilities, best, notes, x_key, reps, normalised)
  rf.atomic_write_text(out / SUMMARY, summary)
  return out, numbers, best


def _markdown(paths, runs, scores, numbers, probabilities, best, notes, x_key, reps, normalised) -> str:
  metric_names = list(numbers[best])
  kind = "normalised final return" if normalised else "final return"
  lines = [
    f"# Report: {', '.join(map(str, paths))}",
    "",
    f"{len(runs)} runs, {len(scores.configs)} configurations, tasks: {', '.join(scores.tasks)}. "
    f"A run's score is the mean return of its last evaluation ({kind}). Intervals are 95% "
    f"stratified bootstrap CIs over runs ({reps} replications, rliable); IQM is the mean of the "
    "middle 50% of all run scores."
    + ("" if normalised else " Optimality gap needs normalised scores: pass --reference."),
    "",
    f"![learning curves]({FIGURES['curves']})",
    "",
    "| configuration | runs | " + " | ".join(metric_names) + " | scores |",
    "| --- | --- | " + " | ".join("---" for _ in metric_names) + " | --- |",
  ]
  for config in sorted(scores.configs, key=lambda c: -numbers[c]["IQM"][0]):
    matrix = scores.matrices[config]
    values = ", ".join(_number(v) for v in matrix.ravel())
    cells = " | ".join(_ci(numbers[config][m]) for m in metric_names)
    lines.append(
      f"| {config}{' (best IQM)' if config == best else ''} | {matrix.shape[0]} | {cells} | {values} |"
    )
  lines += ["", f"![aggregates]({FIGURES['aggregates']})", ""]
  if probabilities:
    lines += [
      "## Probability of improvement",
      "",
      "P(X > Y): the chance that a run of X scores higher than a run of Y on the same task.",
      "",
      "| X | Y | P(X > Y) [95% CI] |",
      "| --- | --- | --- |",
    ]
    for pair, value in probabilities.items():
      x, y = pair.split(PAIR)
      lines.append(f"| {x} | {y} | {_ci(value)} |")
    lines += ["", f"![probability of improvement]({FIGURES['improvement']})", ""]
  lines += [
    "## Performance profile",
    "",
    "Fraction of runs scoring above each threshold, with 95% bootstrap bands.",
    "",
    f"![performance profile]({FIGURES['profile']})",
    "",
    "## Runs",
    "",
    f"| run | task | {x_key} | final return | wall seconds |",
    "| --- | --- | --- | --- | --- |",
  ]
  for run in sorted(runs, key=lambda r: str(r.path)):
    last = run.records[-1]
    lines.append(
      f"| {run.path.name} | {run.task} | {last[x_key]} | {run.score:.1f} | {last.get('wall_seconds', '?')} |"
    )
  if notes or scores.notes:
    lines += ["", "## Notes", ""] + [f"- {note}" for note in notes + scores.notes]
  return "\n".join(lines) + "\n"


def _report(paths: Sequence[str]) -> int:
  if not paths:
    raise PipelineError("give a folder of runs, e.g. pipelines-report runs/sweep1")
  out = Path(FLAGS.out or Path(paths[0]) / "report").expanduser().absolute()
  import warnings

  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.WARNING)  # rliable logs each estimate at INFO
  warnings.filterwarnings("ignore")  # seaborn/pandas/arch deprecation chatter
  out, numbers, best = write_report(paths, out, FLAGS.reference, FLAGS.x, FLAGS.reps, FLAGS.seed)
  iqm = numbers[best]["IQM"]
  print(f"Report: {out / SUMMARY} ({len(numbers)} configurations; best IQM {best}: {_ci(iqm)})")
  return 0


def main(argv) -> None:
  sys.exit(cli.command(lambda: _report(argv[1:]), "pipelines-report"))


def run() -> None:
  """Console-script entry point (`pipelines-report`)."""
  define_flags()
  cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
  run()
