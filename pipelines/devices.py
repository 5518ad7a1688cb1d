"""Which device trains, and GPU memory that processes on one GPU can share.

    pipelines-train --gin_file=gin/dqn_cartpole.gin --root_dir=runs/dqn   # stderr: "device: ..."

Every training process (`pipelines-train`, each `pipelines-launch` role, `pipelines-evaluate`)
calls `configure` once at start-up, before TensorFlow runs its first op: it turns on memory
growth for every visible GPU and prints one line saying which device trains, e.g.
`device: GPU 0 (NVIDIA H200), memory growth on` or `device: CPU (no GPU visible), 2 cores`.
Why growth: by default TensorFlow reserves nearly all of a GPU's memory at its first op, so a
second process on the same GPU (a sweep's next run, actors beside a learner) fails to allocate.
Children started by sweep, tune and launch also get `TF_FORCE_GPU_ALLOW_GROWTH=true`
(`child_runs.child_env`), which holds even for TensorFlow work done before `configure`.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

# TensorFlow reads it when it sets up a GPU allocator; "true"/"false" override set_memory_growth.
ALLOW_GROWTH_ENV = "TF_FORCE_GPU_ALLOW_GROWTH"


def configure(stream: TextIO | None = None) -> str:
  """Turns on memory growth for each visible GPU and prints which device trains; returns the line.

  Call once per process, before the first TensorFlow op: TensorFlow refuses to change
  memory growth once it has initialised the GPUs. The line goes to `stream` (default stderr,
  so that stdout keeps each tool's own output, e.g. pipelines-evaluate's one JSON line).
  """
  import tensorflow as tf

  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    line = f"device: CPU (no GPU visible), {_cores()} cores"
  else:
    growth = _enable_memory_growth(tf, gpus)  # first: nothing may touch the GPUs before it
    line = f"device: GPU 0 ({_gpu_name(tf, gpus[0])}), memory growth {growth}"
    if len(gpus) > 1:  # TensorFlow places ops on the first GPU; the others stay idle
      line += f"; {len(gpus)} GPUs visible, ops go to GPU 0 (CUDA_VISIBLE_DEVICES picks which)"
  print(line, file=sys.stderr if stream is None else stream, flush=True)
  return line


def _enable_memory_growth(tf, gpus: list) -> str:
  """Requests memory growth for every GPU; says whether it is on ("on", or "off (why)")."""
  forced = os.environ.get(ALLOW_GROWTH_ENV)
  if forced == "false":  # the user's explicit choice; TensorFlow lets it win over set_memory_growth
    return f"off ({ALLOW_GROWTH_ENV}=false)"
  try:
    for gpu in gpus:
      tf.config.experimental.set_memory_growth(gpu, True)
  except RuntimeError:  # an op already ran: the GPUs are initialised, whatever was set stays
    if forced == "true" or tf.config.experimental.get_memory_growth(gpus[0]):
      return "on"
    return "off (TensorFlow had set up the GPU before this call)"
  return "on"


def _gpu_name(tf, gpu) -> str:
  try:
    return tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
  except ValueError:  # details unknown for this device: its TensorFlow name still says which
    return gpu.name


def _cores() -> int:
  """Cores this process may run on (its affinity mask, e.g. under taskset or a container)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1
