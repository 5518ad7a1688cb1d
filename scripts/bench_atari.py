"""Atari benchmark: Nature-CNN update speed, loop speed, collection overhead, replay memory.

    .venv/bin/python scripts/bench_atari.py                      # (a)-(d), ~5 min on 2 cores
    .venv/bin/python scripts/bench_atari.py --skip_memory        # (a)-(c) only
    .venv/bin/python scripts/bench_atari.py --num_envs=8 --save_restore

(a) train steps/s of the Nature CNN update alone (batch 32, RMSprop), in one compiled loop
    reading batches from the frame-stack replay, as the trainer does;
(b) agent steps/s of the whole collect-train loop at one gradient step per 4 agent steps,
    and its ratio to 4 x (a) (target >= 0.85);
(c) collection-only agent steps/s through the same loop (Nature CNN epsilon-greedy policy,
    replay adds) over ale-py's AtariVectorEnv, and its ratio to the raw AtariVectorEnv
    stepped with random actions on the same number of envs and threads (target >= 0.8);
(d) resident memory of a full 1M-transition frame-stack replay (target <= 8 GB), filled
    with random frames in life-episodes of 50 steps; --save_restore also times writing and
    reading it as a checkpoint.
All figures of one invocation come from the same machine state; the machine is shared, so
compare ratios, and note the load average printed first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipelines import cli, configurables, replay  # noqa: E402
from pipelines.atari import ale_py, gym  # noqa: E402


def rss_gb() -> float:
  for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmRSS:"):
      return int(line.split()[1]) / 2**20
  return float("nan")


def build(num_envs: int, fast: bool, train_steps: int):
  gin.clear_config()
  bindings = [
    f"collect/make_environment.num_envs = {num_envs}",
    f"OffPolicyTrainer.collect_steps_per_iteration = {4 * num_envs}",
    f"OffPolicyTrainer.train_steps_per_iteration = {train_steps * num_envs}",
    "OffPolicyTrainer.initial_collect_steps = 2_000",
    "frame_stack_replay.capacity = 20_000",
    "eval/make_environment.num_envs = 1",
  ]
  if fast:
    bindings.append("collect/make_environment.vector_env_fn = @atari_vector_env")
  cli.parse_gin([str(REPO / "gin/dqn_breakout_nature.gin")], bindings)
  parts = configurables.experiment.build_components()
  parts.trainer.initialize()
  return parts


def timed(fn, warmup, *args) -> float:
  fn(*args) if warmup else None
  start = time.perf_counter()
  fn(*args)
  return time.perf_counter() - start


def bench_update(parts, steps: int) -> float:
  trainer = parts.trainer

  @tf.function(autograph=False)
  def updates(n):
    def body(i, loss):
      experience, _ = next(trainer._iterator)
      return i + 1, trainer._update(experience).loss

    return tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), tf.constant(0.0)))

  updates(tf.constant(5))
  return steps / timed(updates, False, tf.constant(steps))


def bench_loop(parts, agent_steps: int) -> float:
  trainer = parts.trainer
  iterations = max(1, agent_steps // trainer.env_steps_per_iteration)
  trainer.run(2)
  return iterations * trainer.env_steps_per_iteration / timed(trainer.run, False, iterations)


def bench_raw(num_envs: int, agent_steps: int) -> float:
  env = ale_py.vector_env.AtariVectorEnv(
    "breakout", num_envs, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP, life_loss_info=True
  )
  env.reset(seed=0)
  rng = np.random.default_rng(0)
  steps = max(1, agent_steps // num_envs)
  start = time.perf_counter()
  for _ in range(steps):
    env.step(rng.integers(0, 4, num_envs))
  seconds = time.perf_counter() - start
  env.close()
  return steps * num_envs / seconds


def bench_memory(capacity: int, save_restore: bool) -> None:
  store = replay.FrameStore(_spec(), num_envs=1, capacity=capacity)
  before = rss_gb()
  rng = np.random.default_rng(0)
  pool = rng.integers(0, 256, (64, 4, 84, 84), np.uint8)
  zeros = [np.zeros(1, np.int32), np.zeros(1, np.int64), np.zeros(1, np.int32)]
  start = time.perf_counter()
  for i in range(capacity):
    step_type = np.array([0 if i % 50 == 0 else 1], np.int32)
    store.add(pool[i % 64][None], step_type, [step_type, zeros[1], zeros[2], np.zeros(1, np.float32),
                                               np.ones(1, np.float32)])  # fmt: skip
  fill = time.perf_counter() - start
  after = rss_gb()
  print(
    f"(d) replay of {capacity:,} transitions: process RSS {after:.2f} GiB, of which {after - before:.2f} GiB "
    f"({(after - before) * 2**30 / 1e9:.2f} GB) added by the buffer (frames alone "
    f"{store._frames.nbytes / 2**30:.2f} GiB); one (4, 84, 84) stack per transition would take "
    f"{capacity * 4 * 84 * 84 / 2**30:.1f} GiB [filled in {fill:.0f} s]; target <= 8 GB",
    flush=True,
  )
  if save_restore:
    folder = Path(tempfile.mkdtemp(dir=REPO / "runs")) / "replay"
    try:
      seconds = timed(store.save_to, False, folder)
      size = sum(f.stat().st_size for f in folder.iterdir()) / 2**30
      print(f"    checkpoint save: {seconds:.1f} s for {size:.2f} GiB", flush=True)
      print(f"    checkpoint restore: {timed(store.restore_from, False, folder):.1f} s")
    finally:
      shutil.rmtree(folder.parent, ignore_errors=True)


def _spec():
  from tf_agents.specs import tensor_spec
  from tf_agents.trajectories import trajectory

  return trajectory.Trajectory(
    step_type=tensor_spec.TensorSpec((), tf.int32),
    observation=tensor_spec.TensorSpec((4, 84, 84), tf.uint8),
    action=tensor_spec.TensorSpec((), tf.int64),
    policy_info=(),
    next_step_type=tensor_spec.TensorSpec((), tf.int32),
    reward=tensor_spec.TensorSpec((), tf.float32),
    discount=tensor_spec.TensorSpec((), tf.float32),
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_envs", type=int, default=4, help="copies for (b) and (c)")
  parser.add_argument("--train_steps", type=int, default=200, help="gradient steps timed in (a)")
  parser.add_argument("--agent_steps", type=int, default=2_000, help="agent steps timed in (b), (c)")
  parser.add_argument("--capacity", type=int, default=1_000_000)
  parser.add_argument("--skip_memory", action="store_true")
  parser.add_argument("--save_restore", action="store_true")
  args = parser.parse_args()
  os.chdir(REPO)  # gin includes are relative to the repository root
  print(f"load average {os.getloadavg()} on {os.cpu_count()} cores; TF devices "
        f"{[d.device_type for d in tf.config.list_physical_devices()]}", flush=True)  # fmt: skip

  parts = build(args.num_envs, fast=True, train_steps=1)
  update = bench_update(parts, args.train_steps)
  print(f"(a) Nature CNN update, batch 32: {update:.1f} train steps/s", flush=True)
  loop = bench_loop(parts, args.agent_steps)
  print(
    f"(b) collect + train loop, 1 gradient step per 4 agent steps ({args.num_envs} envs, ale-py "
    f"vector env): {loop:.1f} agent steps/s = {loop / (4 * update):.2f} x 4 x (a); target >= 0.85",
    flush=True,
  )
  parts.close()
  parts = build(args.num_envs, fast=True, train_steps=0)
  collect = bench_loop(parts, args.agent_steps)
  parts.close()
  raw = bench_raw(args.num_envs, args.agent_steps * 4)
  print(
    f"(c) collection only through the loop: {collect:.0f} agent steps/s; raw AtariVectorEnv "
    f"({args.num_envs} envs, random actions): {raw:.0f} agent steps/s; ratio {collect / raw:.2f}; "
    "target >= 0.8",
    flush=True,
  )
  if not args.skip_memory:
    bench_memory(args.capacity, args.save_restore)


if __name__ == "__main__":
  main()
