"""Warm start: a new run that begins from another run's agent, and optionally its replay.

    pipelines-train --gin_file=gin/dqn_cartpole.gin --root_dir=runs/dqn_branch \
        --init_from=runs/dqn_cartpole            # its newest checkpoint
    pipelines-train ... --init_from=runs/dqn_cartpole:20000 --init_replay

Copies the agent's variables (networks, target network, optimizer state) from one of the
source run's kept training checkpoints: the newest, or the one taken at ENV_STEPS; with
`--init_replay` the off-policy replay too (the random initial collect is then skipped).
The new run's own counters (env steps, train step, metrics) start at zero, as RL
Baselines3 Zoo's `--trained-agent` does (SB3's `learn` resets `num_timesteps`): epsilon and
learning-rate schedules start over. The source run is only read.

To continue the same run with a larger budget, re-run its own command instead (README).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import tensorflow as tf

from pipelines.errors import PipelineError
from pipelines.storage import checkpoints
from pipelines.storage import run_folder as rf


def parse(spec: str) -> tuple[Path, int | None]:
  """`RUN_DIR` or `RUN_DIR:ENV_STEPS` -> (folder, env steps or None for the newest)."""
  match = re.fullmatch(r"(.+?)(?::(\d+))?", spec)
  return Path(match.group(1)).expanduser().absolute(), (int(match.group(2)) if match.group(2) else None)


def kept_checkpoints(source: Path) -> list[int]:
  """Env steps of the training checkpoints a run folder holds, oldest first."""
  pattern = re.compile(r"ckpt-(\d+)\.index")
  found = (pattern.fullmatch(p.name) for p in (source / rf.CHECKPOINTS).glob("ckpt-*.index"))
  return sorted(int(m.group(1)) for m in found if m)


def find_checkpoint(spec: str) -> tuple[Path, int]:
  """The source run and the env steps of the checkpoint `spec` names. Raises PipelineError
  when the source is not a run or has no such checkpoint (reads only file names)."""
  source, wanted = parse(spec)
  if not rf.RunFolder(source).is_run:
    raise PipelineError(f"--init_from {source} holds no run ({rf.RUN_INFO} missing)")
  kept = kept_checkpoints(source)
  if not kept:
    raise PipelineError(f"--init_from {source} has no checkpoint yet")
  if wanted is not None and wanted not in kept:
    available = ", ".join(str(n) for n in kept)
    raise PipelineError(f"--init_from {source} has no checkpoint at {wanted} env steps; kept: {available}")
  return source, kept[-1] if wanted is None else wanted


def warm_start(
  spec: str, agent: tf.Module, train_step: tf.Variable, items: dict[str, Any], with_replay: bool
) -> dict[str, Any]:
  """Loads the agent (and with `with_replay` the replay in `items`) of the run `spec` names;
  returns what run.json records. Raises PipelineError, having written nothing, when the
  source is not a run, has no such checkpoint, or its agent does not fit this one."""
  source, steps = find_checkpoint(spec)
  prefix = source / rf.CHECKPOINTS / f"ckpt-{steps}"
  replay = dict(items) if with_replay else {}
  if with_replay and not replay:
    raise PipelineError("--init_replay: this run's trainer keeps no replay (an on-policy agent)")
  files = {name: item for name, item in replay.items() if isinstance(item, checkpoints.SavedBeside)}
  trackables = {name: item for name, item in replay.items() if name not in files}
  try:
    # The train step is part of the agent (its counter): loaded with it, then reset below.
    status = tf.train.Checkpoint(agent=agent, **trackables).restore(str(prefix))
    status.assert_existing_objects_matched().expect_partial()  # the run's other state is its own
    for name, item in files.items():
      item.restore_from(Path(f"{prefix}.{name}"))
  except (AssertionError, ValueError, KeyError, OSError, tf.errors.OpError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise PipelineError(
      f"--init_from {source}: checkpoint ckpt-{steps} does not fit this run's agent ({reason[:300]})"
    ) from None
  train_step.assign(0)
  return {"run": str(source), "env_steps": steps, "replay": bool(replay)}
