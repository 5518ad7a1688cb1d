"""Experiment tracking with standard tools: TensorBoard's HParams table and Weights & Biases.

    pipelines-sweep ... --root_dir=runs/sweep1 && tensorboard --logdir runs/sweep1/hparams
    pipelines-train --gin_file=gin/dqn_cartpole.gin --root_dir=runs/dqn --wandb_project=cartpole

A sweep writes one HParams session per finished run to `<sweep root>/hparams/<run name>/`:
the swept gin values and the seed, with the run's final and best evaluation return (from
`metrics.jsonl`), so TensorBoard's HParams tab compares the runs in one table.
`--wandb_project` mirrors a run's TensorBoard scalars to W&B (`pip install -e ".[wandb]"`).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.errors import PipelineError

HPARAMS = "hparams"  # <sweep root>/hparams/<run name>/: one HParams session per run
SEED_NAME = "seed"
WANDB_EXTRA = 'pip install -e ".[wandb]" (or pip install wandb)'  # as cli's other extras


def hparam_value(text: str) -> bool | int | float | str:
  """A gin literal as an HParams value: numbers and booleans stay numbers (the table sorts and
  filters them); anything else (tuples, strings, @references) stays its gin text."""
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text
  return value if isinstance(value, bool | int | float) else text


def binding_hparams(bindings: Sequence[str], seed_parameter: str) -> dict[str, bool | int | float | str]:
  """{'tf.keras.optimizers.Adam.learning_rate': 0.001, ..., 'seed': 0} from 'name = value' bindings."""
  hparams = {}
  for binding in bindings:
    name, _, value = binding.partition(" = ")
    hparams[SEED_NAME if name == seed_parameter else name] = hparam_value(value)
  return hparams


def run_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """The columns of a run in the HParams table, from its metrics.jsonl records."""
  returns = [r["average_return"] for r in records]
  return {"final_return": returns[-1], "best_return": max(returns), "env_steps": records[-1]["env_steps"]}


def write_hparams(logdir: Path, hparams: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> None:
  """One HParams session in `logdir` (replaced if there): the values and the run's metrics,
  the metrics at the run's last env step.

  Written as protos with TensorBoard's own event writer, not `tf.summary`: eager TF ops in
  the sweep process would start a GPU context beside the runs it launches.
  """
  from tensorboard.compat.proto import event_pb2, summary_pb2
  from tensorboard.plugins.hparams import api as hp
  from tensorboard.summary.writer.event_file_writer import EventFileWriter

  if logdir.exists():  # a rewrite (a resumed run finished later) must not leave two sessions
    shutil.rmtree(logdir)
  metrics = run_metrics(records)
  writer = EventFileWriter(str(logdir))
  now = time.time()
  writer.add_event(event_pb2.Event(wall_time=now, step=0, summary=hp.hparams_pb(dict(hparams), logdir.name)))
  values = [summary_pb2.Summary.Value(tag=name, simple_value=value) for name, value in metrics.items()]
  summary = summary_pb2.Summary(value=values)
  writer.add_event(event_pb2.Event(wall_time=now, step=int(metrics["env_steps"]), summary=summary))
  writer.close()


def import_wandb():
  """The wandb module, or one error line naming the extra to install."""
  try:
    import wandb
  except ImportError:
    raise PipelineError(f"--wandb_project needs the wandb package: {WANDB_EXTRA}") from None
  return wandb


@contextlib.contextmanager
def wandb_run(project: str, root_dir: str, config: Mapping[str, Any]) -> Iterator[None]:
  """Mirrors the run's TensorBoard scalars to a W&B run while the block runs.

  The W&B run id comes from the run folder, so a resumed run continues the same W&B run.
  wandb's own TensorBoard sync uploads what the summary writers write (train/, eval/).
  """
  wandb = import_wandb()
  root = Path(root_dir).expanduser().absolute()
  wandb.tensorboard.patch(root_logdir=str(root))  # before any summary writer exists
  run_id = hashlib.sha1(str(root).encode()).hexdigest()[:16]  # W&B ids allow no '/', ':' or '%'
  wandb.init(project=project, name=root.name, id=run_id, resume="allow", config=dict(config))
  exit_code = 1
  try:
    yield
    exit_code = 0
  finally:
    wandb.finish(exit_code=exit_code)
