"""Atari benchmark: Nature-CNN update speed, loop speed, collection overhead, replay memory.

    .venv/bin/python scripts/bench_atari.py                      # (a)-(d), ~3 min on 2 cores
    .venv/bin/python scripts/bench_atari.py --skip_memory        # (a)-(c) only
    .venv/bin/python scripts/bench_atari.py --num_envs=8 --save_restore

(a) train steps/s of the Nature CNN update alone (batch 32, RMSprop) in one compiled loop,
    on one fixed batch, and reading each batch from the frame-stack replay as the trainer does;
(b) agent steps/s of the whole collect-train loop at one gradient step per 4 agent steps,
    and its ratio to 4 x (a) (target >= 0.85);
(c) collection-only agent steps/s through the loop (ale-py's AtariVectorEnv behind the
    adapter, TF-Agents' driver, replay adds, training metrics) against the raw
    AtariVectorEnv on the same number of envs and threads, both with uniform random
    actions: the loop's own cost (target >= 0.8). Then the same loop with the Nature-CNN
    epsilon-greedy collect policy, whose forward pass raw ale-py does not run;
(d) resident memory of a full 1M-transition frame-stack replay (target <= 8 GB), filled
    with random frames in life-episodes of 50 steps; --save_restore also times writing and
    reading it as a checkpoint.
Agent steps are counted alike on both sides: steps whose action acts. The step that
auto-resets a copy after its episode ended (ale-py's NEXT_STEP mode) is not one; the loop's
counter (TF-Agents' EnvironmentSteps) skips it too. Each ratio is the median over --rounds
interleaved rounds, so that a slow spell of the shared machine hits both sides of a ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipelines import cli  # noqa: E402

cli.quiet_libraries()  # before tf-agents imports the old gym, and gin's search-path misses

from pipelines import configurables, replay  # noqa: E402
from pipelines.atari import ale_py, gym  # noqa: E402


def rss_gb() -> float:
  for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmRSS:"):
      return int(line.split()[1]) / 2**20
  return float("nan")


def build(num_envs: int, train_steps: int, initial_collect_steps: int = 2_000):
  """The Nature experiment's parts, collecting on ale-py's fast path with `num_envs` copies."""
  gin.clear_config()
  bindings = [
    f"collect/make_environment.num_envs = {num_envs}",
    f"OffPolicyTrainer.collect_steps_per_iteration = {4 * num_envs}",
    f"OffPolicyTrainer.train_steps_per_iteration = {train_steps * num_envs}",
    f"OffPolicyTrainer.initial_collect_steps = {initial_collect_steps}",
    "frame_stack_replay.capacity = 20_000",
    "eval/make_environment.num_envs = 1",
    "collect/make_environment.vector_env_fn = @atari_vector_env",
  ]
  cli.parse_gin([str(REPO / "gin/dqn_breakout_nature.gin")], bindings)
  parts = configurables.experiment.build_components()
  parts.trainer.initialize()
  return parts


def timed(fn, *args) -> tuple[float, object]:
  """(seconds, result) of one call."""
  start = time.perf_counter()
  result = fn(*args)
  return time.perf_counter() - start, result


def update_fn(parts, steps: int, sample: bool) -> Callable[[], int]:
  """`steps` Nature-CNN updates in one compiled loop, on batches sampled from the
  frame-stack replay as the trainer does (sample=True) or on one fixed batch (the update
  alone)."""
  trainer = parts.trainer
  fixed, _ = next(trainer._iterator)

  @tf.function(autograph=False)
  def updates(n):
    def body(i, loss):
      experience = next(trainer._iterator)[0] if sample else fixed
      return i + 1, trainer._update(experience).loss

    return tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), tf.constant(0.0)))

  def run() -> int:
    updates(tf.constant(steps))
    return steps

  run()
  return run


def counted(parts, run: Callable[[], object]) -> Callable[[], int]:
  """`run`, returning the agent steps it took by the loop's own counter."""
  counter = parts.metrics.env_steps

  def call() -> int:
    before = int(counter.result())
    run()
    return int(counter.result()) - before

  return call


def loop_fn(parts, agent_steps: int) -> Callable[[], int]:
  """The trainer's collect(+train) iterations for about `agent_steps` agent steps."""
  trainer = parts.trainer
  iterations = max(1, agent_steps // trainer.env_steps_per_iteration)
  trainer.run(2)
  return counted(parts, lambda: trainer.run(iterations))


def random_collect_fn(parts) -> Callable[[], int]:
  """The loop's initial-collect driver: uniform random actions through the adapter, the
  driver, replay adds and metrics (OffPolicyTrainer.initial_collect_steps agent steps)."""
  trainer = parts.trainer
  run = tf.function(trainer._initial_driver.run, autograph=False)

  def collect():
    trainer._time_step, _ = run(trainer._time_step)

  collect()
  return counted(parts, collect)


def raw_env(num_envs: int):
  env = ale_py.vector_env.AtariVectorEnv(
    "breakout", num_envs, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP, life_loss_info=True
  )
  env.reset(seed=0)
  return env


def raw_fn(env, agent_steps: int) -> Callable[[], int]:
  """Raw AtariVectorEnv stepped with random actions; counts steps whose action acts."""
  rng = np.random.default_rng(0)
  ended = np.zeros(env.num_envs, bool)

  def run() -> int:
    nonlocal ended
    steps = 0
    for _ in range(max(1, agent_steps // env.num_envs)):
      _, _, terminated, truncated, _ = env.step(rng.integers(0, 4, env.num_envs))
      steps += int(np.count_nonzero(~ended))  # an ended copy's next step only resets it
      ended = terminated | truncated
    return steps

  run()
  return run


def rounds(fns: dict[str, Callable[[], int]], n: int) -> dict[str, np.ndarray]:
  """Per-call rates (counted units per second) of each fn, interleaved over n rounds."""
  rates = {name: [] for name in fns}
  for _ in range(n):
    for name, fn in fns.items():
      seconds, units = timed(fn)
      rates[name].append(units / seconds)
  return {name: np.array(r) for name, r in rates.items()}


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
      seconds, _ = timed(store.save_to, folder)
      size = sum(f.stat().st_size for f in folder.iterdir()) / 2**30
      print(f"    checkpoint save: {seconds:.1f} s for {size:.2f} GiB", flush=True)
      print(f"    checkpoint restore: {timed(store.restore_from, folder)[0]:.1f} s")
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
  parser.add_argument("--train_steps", type=int, default=40, help="gradient steps per round of (a)")
  parser.add_argument("--agent_steps", type=int, default=400, help="agent steps per round of (b), (c)")
  parser.add_argument("--collect_steps", type=int, default=4_000, help="agent steps per round of (c)")
  parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per ratio")
  parser.add_argument("--capacity", type=int, default=1_000_000)
  parser.add_argument("--skip_memory", action="store_true")
  parser.add_argument("--save_restore", action="store_true")
  args = parser.parse_args()
  os.chdir(REPO)  # gin includes are relative to the repository root
  print(f"load average {os.getloadavg()} on {os.cpu_count()} cores; TF devices "
        f"{[d.device_type for d in tf.config.list_physical_devices()]}", flush=True)  # fmt: skip

  parts = build(args.num_envs, train_steps=1)
  fns = {"update": update_fn(parts, args.train_steps, sample=False)}
  fns["sampled"] = update_fn(parts, args.train_steps, sample=True)
  fns["loop"] = loop_fn(parts, args.agent_steps)
  r = rounds(fns, args.rounds)
  parts.close()
  ratio = r["loop"] / (4 * r["update"])
  print(
    f"(a) Nature CNN update, batch 32: {np.median(r['update']):.1f} train steps/s alone "
    f"({np.median(r['sampled']):.1f} reading each batch from the replay, as the trainer does)",
    flush=True,
  )
  print(
    f"(b) collect + train loop, 1 gradient step per 4 agent steps ({args.num_envs} envs, ale-py "
    f"vector env): {np.median(r['loop']):.1f} agent steps/s = {np.median(ratio):.2f} x 4 x (a) "
    f"[rounds {ratio.min():.2f}-{ratio.max():.2f}]; target >= 0.85",
    flush=True,
  )
  parts = build(args.num_envs, train_steps=0, initial_collect_steps=args.collect_steps)
  env = raw_env(args.num_envs)
  fns = {"raw": raw_fn(env, args.collect_steps), "random": random_collect_fn(parts)}
  fns["policy"] = loop_fn(parts, args.collect_steps)
  r = rounds(fns, args.rounds)
  env.close()
  parts.close()
  raw, loop, policy = (np.median(r[k]) for k in ("raw", "random", "policy"))
  ratio, policy_ratio = r["random"] / r["raw"], r["policy"] / r["raw"]
  print(
    f"(c) collection only, uniform random actions ({args.num_envs} envs, same threads): through the "
    f"loop {loop:.0f} agent steps/s; raw AtariVectorEnv {raw:.0f}; ratio {np.median(ratio):.2f} "
    f"[rounds {ratio.min():.2f}-{ratio.max():.2f}]; target >= 0.8",
    flush=True,
  )
  print(
    f"    with the Nature-CNN epsilon-greedy collect policy: {policy:.0f} agent steps/s = "
    f"{np.median(policy_ratio):.2f} x raw (the network's forward pass, which raw ale-py does not run)",
    flush=True,
  )
  if not args.skip_memory:
    bench_memory(args.capacity, args.save_restore)


if __name__ == "__main__":
  main()
