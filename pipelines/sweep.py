r"""Run a grid of gin bindings x seeds, one training run per point, a few at a time.

    pipelines-sweep --gin_file=gin/dqn_cartpole.gin \
        --sweep='tf.keras.optimizers.Adam.learning_rate=[1e-3, 3e-4]' \
        --sweep='q_network.fc_layer_params=[(64,), (64, 64), (128, 128)]' \
        --seeds=3 --parallel=2 --root_dir=runs/sweep1

Every run is a `pipelines.train` child with its own run folder under `--root_dir`, named
by its swept values and seed (`learning_rate=0.001__fc_layer_params=(64,)__seed=0`).
Re-running the same command skips finished runs and resumes the others from their
checkpoints; a second sweep on the same `--root_dir` is refused while one is live.
Every configuration is parsed here first, so a bad expression or an unknown parameter
fails before anything is launched. `pipelines-report runs/sweep1` summarises the result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import sys
import time
import tokenize
from collections.abc import Sequence
from pathlib import Path

import gin
from absl import flags

from pipelines import cli, signals
from pipelines.errors import PipelineError
from pipelines.storage import run_folder as rf
from pipelines.tools import child_runs, tracking

SWEEP_INFO = "sweep.json"
SEED_PARAMETER = "build_components.seed"
_SELECTOR = re.compile(r"^[A-Za-z_][\w.]*(/[A-Za-z_][\w.]*)*\.[A-Za-z_]\w*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._,()+-]")
_MAX_NAME = 120  # characters; longer names are cut and made unique by a hash


def define_flags() -> None:
  """Flags are defined on demand: importing this module (tests do) must not clash with
  the other tools' flags of the same name."""
  flags.DEFINE_multi_string("gin_file", [], "Gin config file(s) of every run.")
  flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings shared by every run.")
  flags.DEFINE_multi_string("sweep", [], "NAME=[v1, v2, ...]: gin values to sweep (repeat for a grid).")
  flags.DEFINE_integer("seeds", 1, "Seeds per configuration: build_components.seed = 0 .. seeds-1.")
  flags.DEFINE_integer("parallel", 1, "Runs at once (each uses about one CPU core).")
  flags.DEFINE_string("root_dir", None, "Folder of the sweep: one run folder per run, plus logs/.")
  flags.DEFINE_bool("dry_run", False, "List the runs and whether each is done, then exit.")


class _Reference:
  """A gin `@name` or `%macro` kept as text, so a swept value can be written back."""

  def __init__(self, text: str):
    self.text = text

  def __repr__(self) -> str:
    return self.text


class _TextDelegate(gin.config_parser.ParserDelegate):
  def configurable_reference(self, scoped_configurable_name, evaluate):
    return _Reference(f"@{scoped_configurable_name}{'()' if evaluate else ''}")

  def macro(self, macro_name):
    return _Reference(f"%{macro_name}")


@dataclasses.dataclass(frozen=True)
class Axis:
  """One swept gin parameter and its values, each as gin text (e.g. '(64, 64)')."""

  name: str
  values: tuple[str, ...]


def parse_sweep(expression: str) -> Axis:
  """Parses 'NAME=[v1, v2]' with gin's own literal parser: tuples, strings, @references."""
  name, sep, rhs = expression.partition("=")
  name = name.strip()
  where = f"bad --sweep {expression!r}"
  if not sep or not _SELECTOR.match(name):
    raise PipelineError(f"{where}: expected NAME=[value, ...] with NAME like q_network.fc_layer_params")
  if name == SEED_PARAMETER:
    raise PipelineError(f"{where}: use --seeds=N for {SEED_PARAMETER}")
  parser = gin.config_parser.ConfigParser(rhs.strip(), _TextDelegate())
  try:
    values = parser.parse_value()
  except tokenize.TokenError:
    raise PipelineError(f"{where}: a bracket or quote is not closed") from None
  except SyntaxError as e:
    raise PipelineError(f"{where}: {cli.first_line(e)}") from None
  if parser.current_token.type not in (tokenize.NEWLINE, tokenize.ENDMARKER):
    raise PipelineError(f"{where}: unexpected {parser.current_token.string!r} after the list")
  if not isinstance(values, list) or not values:
    raise PipelineError(f"{where}: the values must be a non-empty list in brackets, e.g. {name}=[1, 2]")
  texts = tuple(repr(v) for v in values)
  if len(set(texts)) != len(texts):
    raise PipelineError(f"{where}: a value is repeated")
  return Axis(name, texts)


def _short_keys(names: Sequence[str]) -> dict[str, str]:
  """The shortest unique tail of each name: 'learning_rate', or 'Adam.learning_rate' if needed."""
  parts = {name: re.split(r"[./]", name) for name in names}
  keys = {}
  for name in names:
    for n in range(1, len(parts[name]) + 1):
      key = ".".join(parts[name][-n:])
      if sum(".".join(p[-n:]) == key for p in parts.values()) == 1:
        break
    keys[name] = key
  return keys


def _slug(text: str) -> str:
  text = text.replace(" ", "").replace("@", "")
  if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
    text = text[1:-1]
  return _UNSAFE.sub("_", text)


def _digest(text: str) -> str:
  return hashlib.sha1(text.encode()).hexdigest()[:8]


@dataclasses.dataclass(frozen=True)
class Run:
  name: str  # run folder name: configuration then seed
  config: str  # the configuration's name, shared by its seeds
  bindings: tuple[str, ...]  # swept bindings, seed last
  seed: int


def expand(axes: Sequence[Axis], seeds: int) -> list[Run]:
  """The grid x seeds, seed-major: every configuration gets seed 0 before any gets seed 1."""
  names = [axis.name for axis in axes]
  if len(set(names)) != len(names):
    raise PipelineError("bad --sweep: a parameter is swept twice")
  if seeds < 1:
    raise PipelineError("--seeds must be >= 1")
  keys = _short_keys(names)
  configs = []
  for values in itertools.product(*(axis.values for axis in axes)):
    bindings = tuple(f"{name} = {value}" for name, value in zip(names, values, strict=True))
    label = "__".join(f"{keys[n]}={_slug(v)}" for n, v in zip(names, values, strict=True))
    if len(label) > _MAX_NAME:
      label = label[:_MAX_NAME] + "~" + _digest("\n".join(bindings))
    configs.append((label, bindings))
  counts = {}
  for label, _ in configs:
    counts[label] = counts.get(label, 0) + 1
  configs = [  # two values that look alike once made filesystem-safe: tell them apart
    (f"{label}~{_digest(chr(10).join(b))}" if counts[label] > 1 else label, b) for label, b in configs
  ]
  runs = []
  for seed in range(seeds):
    for label, bindings in configs:
      name = f"{label}__seed={seed}" if label else f"seed={seed}"
      runs.append(Run(name, label or "default", (*bindings, f"{SEED_PARAMETER} = {seed}"), seed))
  return runs


class Sweep:
  """Launches the runs of a grid as `pipelines.train` children, at most `parallel` at once."""

  def __init__(self, root: Path, gin_files: Sequence[str], bindings: Sequence[str], parallel: int):
    if parallel < 1:
      raise PipelineError("--parallel must be >= 1")
    self.root = root
    self.gin_files = list(gin_files)
    self.bindings = list(bindings)
    self.parallel = parallel
    self._stop = signals.StopSignals()  # installed while `run` runs

  def budgets(self, runs: Sequence[Run]) -> dict[str, dict]:
    """Parses each configuration once (seeds share it); raises on an unknown name."""
    by_config = {}
    for run in runs:
      if run.config not in by_config:
        by_config[run.config] = child_runs.check_config(self.gin_files, [*self.bindings, *run.bindings])
    return {run.name: by_config[run.config] for run in runs}

  def run_dir(self, run: Run) -> Path:
    return self.root / run.name

  def write_info(self, runs: Sequence[Run]) -> None:
    path = self.root / SWEEP_INFO
    info = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    info.update(gin_files=self.gin_files, gin_bindings=self.bindings, command=sys.orig_argv)
    info["runs"].update({run.name: {"config": run.config, "bindings": list(run.bindings)} for run in runs})
    rf.atomic_write_text(path, json.dumps(info, indent=2) + "\n")

  def write_hparams(self, run: Run) -> None:
    """The run's swept values, seed and evaluation returns as a session of TensorBoard's
    HParams tab (`tensorboard --logdir <root_dir>/hparams`), one table across the sweep."""
    records = rf.RunFolder(self.run_dir(run)).read_metrics()
    if records:
      hparams = tracking.binding_hparams(run.bindings, SEED_PARAMETER)
      tracking.write_hparams(self.root / tracking.HPARAMS / run.name, hparams, records)

  def run(self, runs: Sequence[Run], budgets: dict[str, dict]) -> int:
    import tqdm

    pending = [run for run in runs if not child_runs.is_complete(self.run_dir(run), **budgets[run.name])]
    done = len(runs) - len(pending)
    if done:
      print(f"{done} of {len(runs)} runs already finished; skipping them", file=sys.stderr)
    for run in runs:  # finished by an earlier session that stopped before recording them
      if run not in pending and not (self.root / tracking.HPARAMS / run.name).exists():
        self.write_hparams(run)
    running: dict[str, tuple[Run, child_runs.TrainProcess]] = {}
    failed: list[str] = []
    self._stop.install()
    bar = tqdm.tqdm(total=len(runs), initial=done, unit="run", disable=None, dynamic_ncols=True)
    try:
      while (pending or running) and self._stop.received is None:
        while pending and len(running) < self.parallel:
          run = pending.pop(0)
          if not rf.wait_until_unlocked(self.run_dir(run)):
            failed.append(f"{run.name}: its run folder stays locked by another process")
            continue
          command = child_runs.train_command(
            self.gin_files, [*self.bindings, *run.bindings], self.run_dir(run)
          )
          running[run.name] = (
            run,
            child_runs.TrainProcess(command, self.root / child_runs.LOGS / f"{run.name}.log"),
          )
        time.sleep(0.5)
        for name, (run, process) in list(running.items()):
          code = process.poll()
          if code is None:
            continue
          del running[name]
          bar.update(1)
          if code == 0 and child_runs.is_complete(self.run_dir(run), **budgets[name]):
            self.write_hparams(run)
            last = rf.RunFolder(self.run_dir(run)).read_metrics()[-1]
            bar.write(
              f"done {name}: return {last['average_return']:.1f} at {last['env_steps']} env steps "
              f"({process.seconds:.0f} s)"
            )
          else:
            failed.append(f"{name}: exit {code}: {process.error_line()}")
            bar.write(f"FAILED {failed[-1]}")
    finally:
      bar.close()
      self._stop.restore()
      for _, process in running.values():  # interrupted: let each run checkpoint, then exit
        process.terminate()
      for _, process in running.values():
        process.wait(timeout=120)
    if self._stop.received is not None:
      print(
        f"Sweep interrupted; run the same command to resume ({len(running)} runs stopped).", file=sys.stderr
      )
      return self._stop.exit_code
    if failed:
      print(
        f"{len(failed)} of {len(runs)} runs failed (logs in {self.root / child_runs.LOGS}):", file=sys.stderr
      )
      for line in failed:
        print(f"  {line}", file=sys.stderr)
      return 1
    print(f"All {len(runs)} runs finished in {self.root}; summarise them with: pipelines-report {self.root}")
    print(f"Compare them in TensorBoard's HParams tab: tensorboard --logdir {self.root / tracking.HPARAMS}")
    return 0


FLAGS = flags.FLAGS


def _sweep() -> int:
  cli.require_gin_files(FLAGS.gin_file)
  if not FLAGS.root_dir:
    raise PipelineError("give --root_dir, the folder of the sweep")
  runs = expand([parse_sweep(e) for e in FLAGS.sweep], FLAGS.seeds)
  root = Path(FLAGS.root_dir).expanduser().absolute()
  rf.check_root_dir(root, SWEEP_INFO, "sweep")
  rf.refuse_if_in_use(root)  # before budgets() imports TensorFlow: a second sweep is told at once
  cli.quiet_libraries()
  sweep = Sweep(root, FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.parallel)
  budgets = sweep.budgets(runs)
  if FLAGS.dry_run:
    for run in runs:
      state = "done" if child_runs.is_complete(sweep.run_dir(run), **budgets[run.name]) else "to run"
      print(f"{state:7} {run.name}: {'; '.join(run.bindings)}")
    return 0
  folder = rf.RunFolder(root)
  folder.lock()  # fcntl on the sweep folder: a second sweep here is refused
  try:
    sweep.write_info(runs)
    return sweep.run(runs, budgets)
  finally:
    folder.unlock()


def main(argv) -> None:
  if len(argv) > 1:
    sys.exit(cli.command(lambda: _raise(f"unexpected argument {argv[1]!r}"), "pipelines-sweep"))
  sys.exit(cli.command(_sweep, "pipelines-sweep"))


def _raise(message: str):
  raise PipelineError(message)


def run() -> None:
  """Console-script entry point (`pipelines-sweep`)."""
  define_flags()
  cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
  run()
