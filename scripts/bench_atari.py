"""Atari benchmark: Nature-CNN update speed, loop speed, collection overhead, replay memory.

    .venv/bin/python scripts/bench_atari.py                      # (a)-(d), ~3 min on 2 cores
    .venv/bin/python scripts/bench_atari.py --skip_memory        # (a)-(c) only
    .venv/bin/python scripts/bench_atari.py --num_envs=8 --save_restore
    .venv/bin/python scripts/bench_atari.py --update_only --update_variants  # (a) and its costs
    .venv/bin/python scripts/bench_atari.py --gin_file=gin/dqn_breakout_dopamine.gin --skip_memory

(a) train steps/s of the Nature CNN update alone (batch 32, the gin's optimizer) in one compiled loop,
    on one fixed batch, against a plain-TensorFlow reference update of the same network,
    weights, optimizer, loss and batch (the hardware limit, target >= 0.95), and reading each
    batch from the frame-stack replay as the trainer does; --update_variants also times the
    reference with DqnAgent's pieces added one at a time and the project's update with one
    change each;
(b) agent steps/s of the whole collect-train loop at one gradient step per 4 agent steps,
    and its ratio to 4 x the plain-TF reference update of (a) (target >= 0.85), so that the
    update's own overhead counts against the loop too;
(c) collection-only agent steps/s through the loop (ale-py's AtariVectorEnv behind the
    adapter, TF-Agents' driver, replay adds, training metrics) against the raw
    AtariVectorEnv on the same number of envs and threads, both with uniform random
    actions: the loop's own cost (target >= 0.8). Then the same loop with the Nature-CNN
    epsilon-greedy collect policy, whose forward pass raw ale-py does not run;
(d) resident memory of a full 1M-transition frame-stack replay (target <= 8 GB), filled
    with random frames in life-episodes of 50 steps; --save_restore also times writing and
    reading it as a checkpoint.
--gin_file picks the experiment (default the Nature protocol); the reference follows its network
padding ('valid' or Dopamine's 'same'), its optimizer and its loss (Huber or MSE).
Agent steps are counted alike on both sides: steps whose action acts. The step that
auto-resets a copy after its episode ended (ale-py's NEXT_STEP mode) is not one; the loop's
counter (TF-Agents' EnvironmentSteps) skips it too. Each ratio is the median over --rounds
interleaved rounds, so that a slow spell of the shared machine hits both sides of a ratio.
"""

from __future__ import annotations

import argparse
import contextlib
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
from tf_agents.agents.dqn import dqn_agent as tfa_dqn_agent  # noqa: E402

from pipelines import cli  # noqa: E402

cli.quiet_libraries()  # before tf-agents imports the old gym, and gin's search-path misses

from pipelines import configurables  # noqa: E402
from pipelines.envs.atari import ale_py, gym  # noqa: E402
from pipelines.replay import replay  # noqa: E402


def rss_gb() -> float:
  for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmRSS:"):
      return int(line.split()[1]) / 2**20
  return float("nan")


GIN_FILE = "gin/dqn_breakout_nature.gin"  # --gin_file


def build(num_envs: int, train_steps: int, initial_collect_steps: int = 2_000):
  """The experiment's parts (GIN_FILE), collecting on ale-py's fast path with `num_envs` copies."""
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
  cli.parse_gin([str(REPO / GIN_FILE)], bindings)
  parts = configurables.experiment.build_components()
  parts.trainer.initialize()
  return parts


def timed(fn, *args) -> tuple[float, object]:
  """(seconds, result) of one call."""
  start = time.perf_counter()
  result = fn(*args)
  return time.perf_counter() - start, result


def update_fn(parts, steps: int, batch=None, update: Callable | None = None) -> Callable[[], int]:
  """`steps` Nature-CNN updates in one compiled loop, on one fixed `batch` (the update alone)
  or, when None, on batches sampled from the frame-stack replay as the trainer does.
  `update` (experience -> loss) defaults to the trainer's compiled `agent.train`."""
  trainer = parts.trainer
  update = update or (lambda experience: trainer._update(experience).loss)

  @tf.function(autograph=False)
  def updates(n):
    def body(i, loss):
      experience = next(trainer._iterator)[0] if batch is None else batch
      return i + 1, update(experience)

    return tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), tf.constant(0.0)))

  def run() -> int:
    updates(tf.constant(steps))
    return steps

  run()
  return run


@contextlib.contextmanager
def patched(obj, name: str, value):
  """`obj.name = value` on the instance while tracing a variant, then the class's again."""
  setattr(obj, name, value)
  try:
    yield
  finally:
    delattr(obj, name)


def project_variants(parts, steps: int, batch) -> dict[str, Callable[[], int]]:
  """The project's update (XLA off, one target pass: gin/agents/dqn_atari.gin, agents.DqnAgent)
  with one of those choices undone each, to show what each is worth."""
  agent = parts.agent

  def two_target_passes(next_time_steps, info):
    # TF-Agents' own: the target network, then its greedy policy running it again for the argmax.
    return tfa_dqn_agent.DqnAgent._compute_next_q_values(agent, next_time_steps, info)

  def compiled(jit_compile: bool):
    train = tf.function(agent.train, jit_compile=jit_compile, autograph=False)
    return update_fn(parts, steps, batch, lambda experience: train(experience).loss)

  fns = {"project, XLA on": compiled(jit_compile=True)}
  with patched(agent, "_compute_next_q_values", two_target_passes):
    fns["project, TF-Agents' two target passes"] = compiled(jit_compile=False)
  return fns


def nature_cnn(num_actions: int, padding: str) -> tf.keras.Sequential:
  """The project's Nature CNN in plain Keras: uint8 (4, 84, 84) stacks, scaled by 1/255 and made
  channels-last inside the network, as pipelines.agents.networks.q_network does; 'valid' (Nature) or
  'same' (Dopamine's JAX network) padding."""
  layers = tf.keras.layers
  return tf.keras.Sequential([
    tf.keras.Input((4, 84, 84), dtype=tf.uint8),
    layers.Lambda(lambda x: tf.transpose(tf.cast(x, tf.float32) / 255.0, [0, 2, 3, 1])),
    layers.Conv2D(32, 8, 4, padding=padding, activation="relu"),
    layers.Conv2D(64, 4, 2, padding=padding, activation="relu"),
    layers.Conv2D(64, 3, 1, padding=padding, activation="relu"),
    layers.Flatten(),
    layers.Dense(512, activation="relu"),
    layers.Dense(num_actions),
  ])  # fmt: skip


def huber(error):
  """tf.compat.v1.losses.huber_loss with delta 1, element-wise (TF-Agents' element_wise_huber_loss)."""
  quadratic = tf.minimum(tf.abs(error), 1.0)
  return 0.5 * quadratic**2 + tf.abs(error) - quadratic


def squared(error):
  """TF-Agents' element_wise_squared_loss (Dopamine's 'mse': no 1/2)."""
  return tf.square(error)


def gin_or(name: str, default):
  try:
    return gin.query_parameter(name)
  except ValueError:  # not bound: the factory's default
    return default


# XLA off: oneDNN's convolutions beat XLA:CPU's here; the reference with XLA on ran at 0.90-0.98x
# of it in interleaved rounds on this shared 2-core machine (--update_variants prints it).
REFERENCE_XLA = False


def reference_update(parts, jit_compile: bool, extras: frozenset = frozenset()):
  """A plain-TensorFlow DQN update of the project's computation (one `tf.function`, no
  TF-Agents): the same network and weights, optimizer, loss (Huber or MSE), gamma and batch.
  `extras` adds DqnAgent's pieces one at a time: "second_target_pass" (its target greedy
  policy runs the target network again for the argmax), "check_numerics", "periodic_target"
  (the target copy under common.Periodically's tf.cond)."""
  agent = parts.agent
  padding = gin_or("q_network.conv_padding", "valid")
  online, target = (nature_cnn(agent.action_spec.maximum + 1, padding) for _ in range(2))
  loss_fn = {"huber": huber, "squared": squared}[
    "squared" if "squared" in str(gin_or("dqn_agent.td_errors_loss_fn", "huber")) else "huber"
  ]
  online.set_weights(agent._q_network.get_weights())  # the same weights: the same loss, checked in main
  target.set_weights(agent._target_q_network.get_weights())
  optimizer = type(agent._optimizer).from_config(agent._optimizer.get_config())
  gamma, period = (gin.query_parameter(f"dqn_agent.{k}") for k in ("gamma", "target_update_period"))
  step = tf.Variable(0, dtype=tf.int64)

  @tf.function(jit_compile=jit_compile, autograph=False)
  def update(experience):
    observation = experience.observation  # (32, 2, 4, 84, 84): a transition's two stacks
    next_q = target(observation[:, 1])
    if "second_target_pass" in extras:
      next_q = tf.gather(next_q, tf.argmax(target(observation[:, 1]), axis=1), batch_dims=1)
    else:
      next_q = tf.reduce_max(next_q, axis=1)
    td_target = experience.reward[:, 0] + gamma * experience.discount[:, 0] * next_q
    valid = tf.cast(experience.step_type[:, 0] != 2, tf.float32)  # no target after a LAST step
    with tf.GradientTape() as tape:
      q = tf.gather(online(observation[:, 0]), experience.action[:, 0], batch_dims=1)
      loss = tf.reduce_mean(valid * loss_fn(td_target - q))
    if "check_numerics" in extras:
      tf.debugging.check_numerics(loss, "Loss is inf or nan")  # unused, as in DqnAgent._train
    weights = online.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
    if "periodic_target" in extras:
      copy = lambda: tf.group([t.assign(o) for t, o in zip(target.variables, online.variables, strict=True)])
      tf.cond(step % period == 0, copy, tf.no_op)
    step.assign_add(1)
    return loss

  return update


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
  for i in range(n):
    # Every other round backwards, so that a trend in the machine's load hits neither side first.
    for name, fn in list(fns.items())[:: -1 if i % 2 else 1]:
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
  global GIN_FILE  # build() reads it
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gin_file", default=GIN_FILE, help="the Atari experiment (its network and update)")
  parser.add_argument("--num_envs", type=int, default=4, help="copies for (b) and (c)")
  parser.add_argument("--train_steps", type=int, default=40, help="gradient steps per round of (a)")
  parser.add_argument("--agent_steps", type=int, default=400, help="agent steps per round of (b), (c)")
  parser.add_argument("--collect_steps", type=int, default=4_000, help="agent steps per round of (c)")
  parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per ratio")
  parser.add_argument("--capacity", type=int, default=1_000_000)
  parser.add_argument("--skip_memory", action="store_true")
  parser.add_argument("--update_only", action="store_true", help="(a) only")
  parser.add_argument(
    "--update_variants", action="store_true", help="(a) also with TF-Agents' pieces on and off"
  )
  parser.add_argument("--save_restore", action="store_true")
  args = parser.parse_args()
  GIN_FILE = args.gin_file
  os.chdir(REPO)  # gin includes are relative to the repository root
  print(f"{GIN_FILE}: load average {os.getloadavg()} on {os.cpu_count()} cores; TF devices "
        f"{[d.device_type for d in tf.config.list_physical_devices()]}", flush=True)  # fmt: skip

  parts = build(args.num_envs, train_steps=1)
  batch, _ = next(parts.trainer._iterator)
  reference = reference_update(parts, jit_compile=REFERENCE_XLA)
  same = float(reference(batch)), float(parts.trainer._update(batch).loss)  # from the same weights
  fns = {"update": update_fn(parts, args.train_steps, batch)}
  fns["reference"] = update_fn(parts, args.train_steps, batch, reference)
  if args.update_variants:
    fns[f"reference, XLA {'off' if REFERENCE_XLA else 'on'}"] = update_fn(
      parts, args.train_steps, batch, reference_update(parts, jit_compile=not REFERENCE_XLA)
    )
    for extra in ("second_target_pass", "check_numerics", "periodic_target"):
      update = reference_update(parts, REFERENCE_XLA, frozenset([extra]))
      fns[f"reference + {extra}"] = update_fn(parts, args.train_steps, batch, update)
    fns.update(project_variants(parts, args.train_steps, batch))
  if not args.update_only:
    fns["sampled"] = update_fn(parts, args.train_steps)
    fns["loop"] = loop_fn(parts, args.agent_steps)
  r = rounds(fns, args.rounds)
  parts.close()
  ratio = r["update"] / r["reference"]
  network = f"Nature CNN ('{gin_or('q_network.conv_padding', 'valid')}' padding)"
  print(
    f"(a) {network} update, batch 32: {np.median(r['update']):.1f} train steps/s alone; plain-TF "
    f"reference (XLA {'on' if REFERENCE_XLA else 'off'}) {np.median(r['reference']):.1f}; ratio "
    f"{np.median(ratio):.2f} [rounds {ratio.min():.2f}-{ratio.max():.2f}]; target >= 0.95 "
    f"(first loss: reference {same[0]:.6f}, project {same[1]:.6f})",
    flush=True,
  )
  for name in [name for name in fns if name not in ("update", "reference", "sampled", "loop")]:
    ratio = r[name] / r["reference"]
    print(
      f"    {name}: {np.median(r[name]):.1f} train steps/s = {np.median(ratio):.2f} x reference "
      f"[rounds {ratio.min():.2f}-{ratio.max():.2f}]",
      flush=True,
    )
  if args.update_only:
    return
  print(f"    the update reading each batch from the replay: {np.median(r['sampled']):.1f} train steps/s")
  ratio, own = r["loop"] / (4 * r["reference"]), r["loop"] / (4 * r["update"])
  print(
    f"(b) collect + train loop, 1 gradient step per 4 agent steps ({args.num_envs} envs, ale-py "
    f"vector env): {np.median(r['loop']):.1f} agent steps/s = {np.median(ratio):.2f} x 4 x the "
    f"reference update [rounds {ratio.min():.2f}-{ratio.max():.2f}]; target >= 0.85 "
    f"({np.median(own):.2f} x 4 x the project's own update)",
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
