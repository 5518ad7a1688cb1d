r"""Search gin parameters with Optuna; write the best trial as a ready-to-train gin file.

    pipelines-tune --gin_file=gin/dqn_cartpole.gin --space=tune/dqn_cartpole.yaml \
        --trials=40 --parallel=2 --root_dir=runs/tune_dqn_cartpole
    pipelines-train --gin_file=runs/tune_dqn_cartpole/best.gin --root_dir=runs/dqn_tuned

Each trial is a `pipelines.train` child in `<root_dir>/trial_NNNN`. Its evaluations
(`metrics.jsonl`) are read as they appear and reported to Optuna as intermediate
values; the median pruner stops a trial (SIGTERM: it checkpoints and exits) whose
value falls below the median of earlier trials at the same env step. The study lives
in `<root_dir>/study.db` (SQLite): re-running the same command continues it up to
`--trials` finished trials, retrying any trial a killed session left running.
The search space file (YAML) is described in `tune/dqn_cartpole.yaml`.

With `--seeds_per_trial=N` a trial trains N seeds (`trial_NNNN/seed=K`, `build_components.seed
= K`) and reports the mean of their objectives, intermediate values included. After the
study, `trials.csv` lists every trial (state, value, parameters, per-seed values) and
`param_importance.png` plots Optuna's parameter importances once 2 trials completed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import gin
from absl import flags

from pipelines import cli, signals
from pipelines.errors import PipelineError
from pipelines.storage import run_folder as rf
from pipelines.tools import child_runs

STUDY_DB = "study.db"
BEST_GIN = "best.gin"
TRIALS_CSV = "trials.csv"
IMPORTANCE_PNG = "param_importance.png"
SEED_PARAMETER = "build_components.seed"
SEED_VALUES = "seed_values"  # trial user attribute: the objective of each seed
OBJECTIVES = {
  # Mean evaluation return over the run: the area under the learning curve, so fast
  # learners win and one lucky final evaluation does not.
  "mean_return": lambda records: sum(r["average_return"] for r in records) / len(records),
  "final_return": lambda records: records[-1]["average_return"],
}
_MAX_FAILURES_IN_A_ROW = 3


def define_flags() -> None:
  """Flags are defined on demand: importing this module (tests do) must not clash with
  the other tools' flags of the same name."""
  flags.DEFINE_multi_string("gin_file", [], "Gin config file(s) every trial starts from.")
  flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings shared by every trial (kept in best.gin).")
  flags.DEFINE_string("space", None, "Search space: YAML file (see tune/dqn_cartpole.yaml).")
  flags.DEFINE_integer("trials", 20, "Finished (completed or pruned) trials the study should hold.")
  flags.DEFINE_integer("parallel", 1, "Trials at once (each uses about one CPU core).")
  flags.DEFINE_string("root_dir", None, "Folder of the study: study.db, trial run folders, best.gin.")
  flags.DEFINE_string("study_name", None, "Name in study.db (default: the space file's name).")
  flags.DEFINE_integer("seed", 0, "Seed of the sampler.")
  flags.DEFINE_integer(
    "seeds_per_trial",
    1,
    f"Seeds each trial trains ({SEED_PARAMETER} = 0..N-1); the trial's objective, and each value "
    "the pruner sees, is the mean of the per-seed objectives.",
  )


FLAGS = flags.FLAGS


def gin_text(value) -> str:
  """A YAML value as gin text: strings are gin literals already ("(64, 64)", "'CartPole-v1'")."""
  if value is None:
    return "None"
  return value if isinstance(value, str) else repr(value)


@dataclasses.dataclass
class Space:
  """What a space file holds: sampled parameters, fixed bindings, objective, pruner settings."""

  distributions: dict  # gin parameter -> optuna distribution
  bindings: list[str]  # fixed gin bindings of every trial
  objective: str
  pruner: dict

  @classmethod
  def load(cls, path: str) -> Space:
    import optuna
    import yaml

    where = f"--space {path}"
    try:
      with open(path) as f:
        spec = yaml.safe_load(f)
    except yaml.YAMLError as e:
      raise PipelineError(f"{where}: not valid YAML ({cli.first_line(e)})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("params"), dict) or not spec["params"]:
      raise PipelineError(f"{where}: needs a 'params' mapping of gin parameter -> distribution")
    unknown = set(spec) - {"params", "bindings", "objective", "pruner"}
    if unknown:
      keys = "params, bindings, objective, pruner"
      raise PipelineError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {keys})")
    objective = spec.get("objective", "mean_return")
    if objective not in OBJECTIVES:
      raise PipelineError(f"{where}: objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    distributions = {}
    for name, dist in spec["params"].items():
      distributions[name] = _distribution(name, dist, where, optuna)
    bindings = [f"{name} = {gin_text(v)}" for name, v in (spec.get("bindings") or {}).items()]
    return cls(distributions, bindings, objective, dict(spec.get("pruner") or {}))

  def sample_bindings(self, params: dict) -> list[str]:
    return [f"{name} = {gin_text(params[name])}" for name in self.distributions]

  def validation_bindings(self) -> list[list[str]]:
    """Configs to parse before any trial: the low bounds, then each other categorical choice."""
    base = {n: d.choices[0] if hasattr(d, "choices") else d.low for n, d in self.distributions.items()}
    configs = [self.sample_bindings(base)]
    for name, dist in self.distributions.items():
      configs += [self.sample_bindings({**base, name: c}) for c in getattr(dist, "choices", ())[1:]]
    return configs


def _distribution(name: str, spec, where: str, optuna):
  """{float: [low, high], log: bool} | {int: [low, high], log: bool} | {choice: [gin values]}."""
  kinds = {"float", "int", "choice"}
  if not isinstance(spec, dict) or len(kinds & set(spec)) != 1 or set(spec) - kinds - {"log", "step"}:
    forms = "{float: [low, high]}, {int: [low, high]} or {choice: [...]}"
    raise PipelineError(f"{where}: {name}: expected {forms}")
  try:
    if "choice" in spec:
      choices = [gin_text(c) for c in spec["choice"]]
      if not choices:
        raise ValueError("no choices")
      return optuna.distributions.CategoricalDistribution(choices)
    kind = "float" if "float" in spec else "int"
    low, high = spec[kind]
    cast = float if kind == "float" else int
    log = bool(spec.get("log", False))
    if kind == "float":
      return optuna.distributions.FloatDistribution(cast(low), cast(high), log=log, step=spec.get("step"))
    return optuna.distributions.IntDistribution(cast(low), cast(high), log=log, step=int(spec.get("step", 1)))
  except (TypeError, ValueError) as e:
    raise PipelineError(f"{where}: {name}: {cli.first_line(e)}") from None


def _include(path: str) -> str:
  """Gin files under gin/ by their name there (found on gin's search path), others absolute."""
  resolved = Path(path).resolve()
  try:
    return str(resolved.relative_to(cli.GIN_DIR))
  except ValueError:
    return str(resolved)


class Tuner:
  """Runs trials as children, reports their evaluations to Optuna, prunes, and records the best."""

  def __init__(
    self,
    root: Path,
    gin_files: Sequence[str],
    bindings: Sequence[str],
    space: Space,
    study,
    seeds_per_trial: int = 1,
  ):
    self.root = root
    self.seeds_per_trial = seeds_per_trial
    self.gin_files = list(gin_files)
    self.bindings = list(bindings)
    self.space = space
    self.study = study
    self.objective = OBJECTIVES[space.objective]
    self._stop = signals.StopSignals()  # installed while `run` runs

  def finished(self) -> int:
    from optuna.trial import TrialState

    return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

  def retry_interrupted(self) -> None:
    """Trials left RUNNING by a killed session: marked failed, their parameters queued again."""
    from optuna.trial import TrialState

    for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
      self.study.tell(trial.number, state=TrialState.FAIL)
      self.study.enqueue_trial(trial.params)
      print(f"trial {trial.number} was interrupted; its parameters are queued again", file=sys.stderr)

  def run_dirs(self, number: int) -> list[Path]:
    """One run folder per seed: `trial_NNNN`, or `trial_NNNN/seed=K` with several seeds."""
    trial_dir = self.root / f"trial_{number:04d}"
    if self.seeds_per_trial == 1:
      return [trial_dir]
    return [trial_dir / f"seed={seed}" for seed in range(self.seeds_per_trial)]

  def _start(self):
    trial = self.study.ask(self.space.distributions)
    # Command-line bindings override the space file's fixed ones (the later binding wins).
    bindings = [*self.space.bindings, *self.bindings, *self.space.sample_bindings(trial.params)]
    processes, run_dirs = [], self.run_dirs(trial.number)
    for seed, run_dir in enumerate(run_dirs):
      seed_binding = [f"{SEED_PARAMETER} = {seed}"] if len(run_dirs) > 1 else []
      command = child_runs.train_command(self.gin_files, [*bindings, *seed_binding], run_dir)
      log = self.root / child_runs.LOGS / f"{'__'.join(run_dir.relative_to(self.root).parts)}.log"
      processes.append(child_runs.TrainProcess(command, log))
    return trial, processes, run_dirs

  def seed_values(self, run_dirs: Sequence[Path], up_to: int | None = None) -> list[float] | None:
    """The objective of each seed over its evaluations up to env step `up_to`; None while a
    seed has none."""
    values = []
    for run_dir in run_dirs:
      records = [r for r in rf.RunFolder(run_dir).read_metrics() if up_to is None or r["env_steps"] <= up_to]
      if not records:
        return None
      values.append(self.objective(records))
    return values

  def _report_new(self, trial, run_dirs: Sequence[Path], reported: set) -> bool:
    """Reports evaluations not yet reported (with several seeds: the env steps every seed has
    evaluated at, the mean over seeds); True when the pruner says stop."""
    steps = [{r["env_steps"] for r in rf.RunFolder(d).read_metrics()} for d in run_dirs]
    for step in sorted(set.intersection(*steps) - reported):
      reported.add(step)
      trial.report(statistics.fmean(self.seed_values(run_dirs, up_to=step)), step=step)
      if trial.should_prune():
        return True
    return False

  @staticmethod
  def _stop_all(processes) -> None:
    for process in processes:
      process.terminate()
    for process in processes:
      process.wait(timeout=120)

  def run(self, n_trials: int, parallel: int) -> int:
    from optuna.trial import TrialState

    running = {}
    failures_in_a_row, last_error = 0, ""
    self._stop.install()
    try:
      while self._stop.received is None and (running or self.finished() < n_trials):
        while (
          len(running) < parallel
          and self.finished() + len(running) < n_trials
          and self._stop.received is None
        ):
          trial, processes, run_dirs = self._start()
          running[trial.number] = (trial, processes, run_dirs, set())
        time.sleep(1.0)
        for number, (trial, processes, run_dirs, reported) in list(running.items()):
          if self._report_new(trial, run_dirs, reported):
            self._stop_all(processes)
            self.study.tell(trial, state=TrialState.PRUNED)
            del running[number]
            print(f"trial {number}: pruned at {max(reported)} env steps", file=sys.stderr)
            continue
          codes = [process.poll() for process in processes]
          failed = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
          if failed is None and None in codes:
            continue
          del running[number]
          values = self.seed_values(run_dirs) if failed is None else None
          if values is not None:
            self._report_new(trial, run_dirs, reported)
            value = statistics.fmean(values)
            trial.set_user_attr(SEED_VALUES, values)
            self.study.tell(trial, value)
            failures_in_a_row = 0
            print(f"trial {number}: {self.space.objective} = {value:.2f}  {trial.params}", file=sys.stderr)
          else:
            self._stop_all(processes)  # one seed failed: the trial has no value
            self.study.tell(trial, state=TrialState.FAIL)
            failures_in_a_row += 1
            culprit = processes[failed if failed is not None else 0]
            last_error = culprit.error_line()
            print(f"trial {number}: failed (exit {culprit.poll()}): {last_error}", file=sys.stderr)
            if failures_in_a_row >= _MAX_FAILURES_IN_A_ROW:
              raise PipelineError(f"{failures_in_a_row} trials in a row failed; last: {last_error}")
    finally:
      self._stop.restore()
      for trial, processes, _, _ in running.values():  # interrupted: stop, keep the study consistent
        self._stop_all(processes)
        self.study.tell(trial, state=TrialState.FAIL)
    if self._stop.received is not None:
      print("Tuning interrupted; run the same command to continue the study.", file=sys.stderr)
      return self._stop.exit_code
    return 0

  def write_trials(self) -> Path:
    """trials.csv: one row per trial (number, state, value, each parameter, per-seed values)."""
    path = self.root / TRIALS_CSV
    names = list(self.space.distributions)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["number", "state", "value", *names, SEED_VALUES])
    for trial in self.study.get_trials(deepcopy=False):
      seeds = trial.user_attrs.get(SEED_VALUES)
      writer.writerow(
        [
          trial.number,
          trial.state.name,
          "" if trial.value is None else trial.value,
          *(trial.params.get(name, "") for name in names),
          "" if seeds is None else json.dumps(seeds),
        ]
      )
    rf.atomic_write_text(path, text.getvalue())
    return path

  def write_importance(self) -> Path | None:
    """param_importance.png: Optuna's importance of each parameter for the objective (its
    default evaluator), once at least 2 trials completed; None before that."""
    import optuna
    from optuna.trial import TrialState

    if len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
      return None
    try:
      importances = optuna.importance.get_param_importances(self.study)
    except (RuntimeError, ValueError) as e:  # e.g. every completed trial has the same parameters
      print(f"warning: no parameter importance plot: {cli.first_line(e)}", file=sys.stderr)
      return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = list(reversed(importances))  # most important on top
    figure, axes = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    axes.barh(names, [importances[n] for n in names])
    axes.set_xlabel(f"importance for {self.space.objective}")
    axes.set_title(f"{self.study.study_name}: parameter importances")
    figure.tight_layout()
    path = self.root / IMPORTANCE_PNG
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

  def write_best(self, space_path: str) -> Path | None:
    from optuna.trial import TrialState

    complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
      return None
    best = self.study.best_trial
    pruned = len(self.study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    path = self.root / BEST_GIN
    lines = [
      f"# Best trial of study {self.study.study_name!r} (space {space_path}), found by pipelines-tune:",
      f"# trial {best.number}, {self.space.objective} = {best.value:.4g}, of {len(complete)} completed "
      f"and {pruned} pruned trials; its run folder: {self.root / f'trial_{best.number:04d}'}",
      f"# Train it: pipelines-train --gin_file={path} --root_dir=runs/tuned",
      *(f"include '{_include(f)}'" for f in self.gin_files),
      "",
      *(["# fixed by the search space", *self.space.bindings, ""] if self.space.bindings else []),
      *(["# --gin_bindings of the study", *self.bindings, ""] if self.bindings else []),
      "# tuned",
      *self.space.sample_bindings(best.params),
    ]
    rf.atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _tune() -> int:
  cli.require_gin_files(FLAGS.gin_file)
  if not FLAGS.space or not FLAGS.root_dir:
    raise PipelineError("give --space (a search space YAML file) and --root_dir (the study's folder)")
  if FLAGS.trials < 1 or FLAGS.parallel < 1 or FLAGS.seeds_per_trial < 1:
    raise PipelineError("--trials, --parallel and --seeds_per_trial must be >= 1")
  if not Path(FLAGS.space).is_file():
    raise PipelineError(f"search space file not found: {FLAGS.space}")
  space = Space.load(FLAGS.space)
  root = Path(FLAGS.root_dir).expanduser().absolute()
  rf.check_root_dir(root, STUDY_DB, "study")
  rf.refuse_if_in_use(root)  # before the configurations are parsed: a second tuner is told at once
  cli.quiet_libraries()
  for bindings in space.validation_bindings():  # unknown names fail before any trial starts
    child_runs.check_config(FLAGS.gin_file, [*space.bindings, *FLAGS.gin_bindings, *bindings])
  gin.clear_config()

  import optuna

  optuna.logging.set_verbosity(optuna.logging.WARNING)
  folder = rf.RunFolder(root)
  folder.lock()  # a second tuner on this study is refused
  try:
    study = optuna.create_study(
      storage=f"sqlite:///{root / STUDY_DB}",
      study_name=FLAGS.study_name or Path(FLAGS.space).stem,
      load_if_exists=True,
      direction="maximize",
      sampler=optuna.samplers.TPESampler(seed=FLAGS.seed + len(_all_trials(root))),
      pruner=optuna.pruners.MedianPruner(**space.pruner),
    )
    tuner = Tuner(root, FLAGS.gin_file, FLAGS.gin_bindings, space, study, FLAGS.seeds_per_trial)
    tuner.retry_interrupted()
    code = tuner.run(FLAGS.trials, FLAGS.parallel)
    print(f"Trials: {tuner.write_trials()}", file=sys.stderr)
    importance = tuner.write_importance()
    if importance is not None:
      print(f"Parameter importances: {importance}", file=sys.stderr)
    best = tuner.write_best(FLAGS.space)
    if best is None:
      print("No trial completed yet; no best.gin written.", file=sys.stderr)
      return code or 1
    print(f"Best trial {study.best_trial.number}: {space.objective} = {study.best_value:.2f}; gin: {best}")
    return code
  finally:
    folder.unlock()


def _all_trials(root: Path) -> list:
  return sorted(root.glob("trial_*"))


def main(argv) -> None:
  del argv
  sys.exit(cli.command(_tune, "pipelines-tune"))


def run() -> None:
  """Console-script entry point (`pipelines-tune`)."""
  define_flags()
  cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
  run()
