"""Distributed collection benchmark: actors scaling, learner sampling, Reverb's overhead;
with --atari, what a Reverb server holding Breakout's replay costs.

    .venv/bin/python scripts/bench_distributed.py                    # DQN CartPole, 1/2/4 actors
    .venv/bin/python scripts/bench_distributed.py --actors=1,2 --seconds=20
    .venv/bin/python scripts/bench_distributed.py --collection_only --actors=1,2 \
        --gin_file=gin/dqn_breakout_dopamine.gin                   # Breakout actors alone
    .venv/bin/python scripts/bench_distributed.py --atari            # 200k transitions, ~10 min
    .venv/bin/python scripts/bench_distributed.py --atari --transitions=20_000 --old_transitions=5_000
    .venv/bin/python scripts/bench_distributed.py --atari --transitions=1_000_000 --old_transitions=0

1. Collection: this process serves the experiment's Reverb tables (rate limit off: no
   learner is reading) and pushes the initial weights; N `pipelines-launch --role=actor`
   processes collect with the collect policy and report their env steps. Env steps/s over
   `--seconds` after every actor's first report, for each N, and the ratio to 1 actor; for
   an Atari gin also ale-py's AtariVectorEnv with the same protocol and copies stepped raw
   (random actions, no policy, no Reverb) in the same run, and each actor's rate against it.
2. Learner: from that server, gradient steps of the agent (batch from make_dataset) on
   Reverb samples, and sampling alone; samples/s = transitions sampled per second. The
   same update on samples of an in-process `TFUniformReplayBuffer` holding the same
   number of transitions gives the ratio.
3. Overhead: the single-process loop (collect + train in one graph, the gin file's own
   ratio) with its replay in a `TFUniformReplayBuffer` and with
   `OffPolicyTrainer.replay_fn = @reverb_replay`: env steps/s and their ratio.

On a machine with C cores, N actors plus this process share them: beyond C - 1 actors
the total cannot grow; the figures show where that happens here.

--atari (gin/dqn_breakout_dopamine.gin, whose replay is `frame_stack_replay`, so that the
distributed plan stores each frame once: `FrameWriter`, `ReverbFrameReplay`):
0. A pool of --pool real Breakout steps: --writers copies of ale-py's AtariVectorEnv with the
   gin's protocol (`pipelines.envs.atari`), uniform random actions, as TF-Agents
   trajectories. Each copy's steps are kept as its newest frames plus each episode's older
   frames (checked against every observation while collecting) and cycled through by the
   writers: Reverb compresses chunk by chunk, so a repeated pool compresses no better.
1. Memory: a Reverb server in its own process (an experience table of the plan's layout,
   no rate limit: nothing samples while it fills) and --writers writer processes, each
   writing its copy's steps with the actor's observer. The server's resident memory
   (/proc/<pid>/status VmRSS) empty and holding --transitions items, the figure per
   transition and its extrapolation to 1M; insert rate (items/s, all writers together).
   The same for today's layout (whole stacks per step, `WindowWriter`) at --old_transitions
   (0 skips it: 1M whole stacks would not fit in 24 GB).
2. The frame-once server's checkpoint: Reverb's checkpoint() time and size on disk, then a
   new server process loading it (its constructor's time) and its memory after the load.
3. Learner side, against the restored server: transitions/s sampled (batch 32, the gin's
   `make_dataset`: the tf.data pipeline that rebuilds the stacks) and gradient steps/s of the
   gin's DQN update on those batches, against the in-process `FrameStackReplay` holding the
   same steps in this process; medians over --rounds interleaved rounds (target >= 0.8x).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines import cli  # noqa: E402

cli.quiet_libraries()

import gin  # noqa: E402
import numpy as np  # noqa: E402
import reverb  # noqa: E402
import tensorflow as tf  # noqa: E402
from tf_agents.experimental.distributed import reverb_variable_container  # noqa: E402
from tf_agents.policies import random_tf_policy  # noqa: E402
from tf_agents.trajectories import policy_step, trajectory  # noqa: E402
from tf_agents.trajectories import time_step as ts  # noqa: E402

from pipelines import configurables  # noqa: E402, F401
from pipelines.distributed import distributed  # noqa: E402
from pipelines.envs import atari as atari_envs  # noqa: E402
from pipelines.replay import replay  # noqa: E402
from pipelines.replay import reverb_replay as rr  # noqa: E402
from pipelines.training import collection, experiment, learning  # noqa: E402


def parse(gin_file: str, bindings: list[str]) -> None:
  gin.clear_config()
  cli.parse_gin([gin_file], bindings)


def raw_atari_rate(num_envs: int, seconds: float) -> float:
  """The independent denominator of Atari actors: ale-py's AtariVectorEnv with the gin's
  protocol (`atari_vector_env`: sticky actions, frame skip, 84x84 stacks), stepped with
  uniform random actions in this process, no policy, no Reverb; agent steps/s, an ended
  copy's resetting step not counted."""
  env = atari_envs.atari_vector_env(num_envs)
  env.reset(seed=0)
  rng = np.random.default_rng(0)
  ended = np.zeros(num_envs, bool)
  steps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    _, _, terminated, truncated, _ = env.step(rng.integers(0, env.single_action_space.n, num_envs))
    steps += int(np.count_nonzero(~ended))
    ended = terminated | truncated
  rate = steps / (time.perf_counter() - start)
  env.close()
  return rate


def measure_collection(
  gin_file: str, actor_counts: list[int], seconds: float, with_learner: bool = True
) -> dict[int, float]:
  """Env steps/s of N actor processes writing to a server in this process."""
  parse(gin_file, ["OffPolicyTrainer.train_steps_per_iteration = 0"])  # no rate limit
  parts = distributed._components()
  plan = distributed.plan_from_gin()
  variables = distributed.variables_nest(
    parts.agent, parts.train_step, parts.metrics.env_steps.environment_steps
  )
  port = rr.free_port()
  server = rr.start_server(plan.tables(parts.agent.collect_data_spec, variables), port)
  address = f"localhost:{port}"
  client = rr.wait_for_server(address, 30, "bench")
  reverb_variable_container.ReverbVariableContainer(address, [rr.VARIABLES]).push(variables)
  rates = {}
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
  for n in actor_counts:
    actors = [
      subprocess.Popen(
        [
          sys.executable, "-m", "pipelines.launch", "--role=actor", f"--actor_id={i}",
          f"--replay_address={address}", f"--gin_file={gin_file}",
          "--gin_bindings=OffPolicyTrainer.train_steps_per_iteration = 0", "--root_dir=/tmp/unused",
        ],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      )
      for i in range(n)
    ]  # fmt: skip
    try:
      rr.drain_reports(client)  # reports of earlier rounds
      seen: set[int] = set()
      while len(seen) < n:  # every actor has started (TF start-up, tracing)
        seen |= {report["actor_id"] for report in rr.drain_reports(client)}
        time.sleep(0.5)
      rr.drain_reports(client)
      start = time.perf_counter()
      time.sleep(seconds)
      steps = sum(report["env_steps"] for report in rr.drain_reports(client))
      rates[n] = steps / (time.perf_counter() - start)
      print(
        f"  {n} actor(s): {rates[n]:,.0f} env steps/s ({rates[n] / rates[actor_counts[0]]:.2f}x)", flush=True
      )
    finally:
      for actor in actors:
        actor.terminate()
      for actor in actors:
        actor.wait()
  if plan.frames_once:  # Atari: against the raw emulator with the same copies, same run
    copies = parts.collect_env.batch_size or 1
    raw = raw_atari_rate(copies, seconds)
    per_actor = ", ".join(f"{n} actor(s) {rates[n] / n / raw:.2f}" for n in actor_counts)
    print(f"  raw AtariVectorEnv, {copies} copies, random actions: {raw:,.0f} agent steps/s; "
          f"each actor / raw: {per_actor}", flush=True)  # fmt: skip
  if with_learner:
    learner(parts, plan, address, client)
  server.stop()
  return rates


def learner(parts, plan, address: str, client) -> None:
  """Gradient steps on Reverb samples vs on an in-process buffer with the same contents."""
  from tf_agents.replay_buffers import reverb_replay_buffer

  size = client.server_info()[rr.EXPERIENCE].current_size
  buffer = reverb_replay_buffer.ReverbReplayBuffer(
    parts.agent.collect_data_spec, rr.EXPERIENCE, sequence_length=plan.sequence_length, server_address=address
  )
  dataset = replay.make_dataset(buffer)
  batch = replay_batch_size()
  update = tf.function(parts.agent.train, jit_compile=True, autograph=False)

  def rate(iterator, steps: int, train: bool) -> float:
    @tf.function(autograph=False)
    def run():
      def body(i):
        experience, _ = next(iterator)
        if train:
          update(experience)
        else:
          tf.reduce_sum(experience.reward)
        return (i + 1,)

      return tf.while_loop(lambda i: i < steps, body, (tf.constant(0),))

    run()  # trace, compile, warm up
    start = time.perf_counter()
    run()
    return steps * batch / (time.perf_counter() - start)

  reverb_iter = iter(dataset)
  sample_only = rate(reverb_iter, 500, train=False)
  reverb_train = rate(reverb_iter, 500, train=True)
  # An in-process TFUniformReplayBuffer as full as the table (random-policy steps: the
  # contents differ, the shapes and hence the cost of sampling and training do not).
  local = replay.uniform_replay(parts.agent.collect_data_spec, parts.tf_env.batch_size, capacity=size)
  policy = random_tf_policy.RandomTFPolicy(parts.tf_env.time_step_spec(), parts.tf_env.action_spec())
  driver = collection.step_driver(parts.tf_env, policy, [local.add_batch], size)
  tf.function(driver.run, autograph=False)(parts.tf_env.reset())
  local_train = rate(iter(replay.make_dataset(local)), 500, train=True)
  print(f"  learner, sampling only from Reverb: {sample_only:,.0f} samples/s (batch {batch})")
  steps_per_second = reverb_train / batch
  print(f"  learner, train steps on Reverb: {steps_per_second:,.0f} steps/s = {reverb_train:,.0f} samples/s")
  print(
    f"  learner, train steps on an in-process buffer: {local_train / batch:,.0f} steps/s "
    f"(Reverb / in-process = {reverb_train / local_train:.2f})"
  )


def replay_batch_size() -> int:
  return learning.configured(replay.make_dataset, "batch_size")


def single_process(gin_file: str, env_steps: int) -> None:
  """The in-process loop with TFUniformReplayBuffer vs an embedded Reverb server."""
  rates = {}
  for name, bindings in (
    ("in-process buffer", []),
    ("embedded Reverb", ["OffPolicyTrainer.replay_fn = @reverb_replay"]),
  ):
    parse(gin_file, bindings)
    parts = experiment.build_components()
    trainer = parts.trainer
    trainer.initialize()
    per = trainer.env_steps_per_iteration
    trainer.run(max(1, 1_000 // per))  # trace + warm-up
    before = int(parts.metrics.env_steps.result())
    start = time.perf_counter()
    trainer.run(max(1, env_steps // per))
    rates[name] = (int(parts.metrics.env_steps.result()) - before) / (time.perf_counter() - start)
    parts.close()
  ratio = rates["embedded Reverb"] / rates["in-process buffer"]
  print(
    f"  single process, collect + train: in-process buffer {rates['in-process buffer']:,.0f} env steps/s, "
    f"embedded Reverb {rates['embedded Reverb']:,.0f} env steps/s (ratio {ratio:.2f})"
  )


# ---------------------------------------------------------------- --atari: Breakout's replay in Reverb

ATARI_GIN = "gin/dqn_breakout_dopamine.gin"
OTHER_FIELDS = ("step_type", "action", "next_step_type", "reward", "discount")  # all but the observation
FRAMES_ONCE, STACKS = "frames", "stacks"  # the two layouts: FrameWriter, WindowWriter


def rss_mb(pid: int) -> float:
  for line in Path(f"/proc/{pid}/status").read_text().splitlines():
    if line.startswith("VmRSS:"):
      return int(line.split()[1]) / 1024
  return float("nan")


def collect_pool(env, steps: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
  """`steps` random-action steps of the batched Breakout `env`, per copy: the newest frame of
  every step, each episode's older frames at its first step, the other trajectory fields;
  each copy's steps end at its last step between episodes, so that cycling them starts a new
  episode. Every observation is checked to be the stack those frames rebuild."""
  rng = np.random.default_rng(seed)
  copies = env.batch_size
  time_step = env.reset()
  columns: list[dict[str, list]] = [{} for _ in range(copies)]
  stacks = [None] * copies
  for _ in range(steps // copies):
    action = rng.integers(0, env.action_spec().maximum + 1, copies).astype(np.int64)
    next_time_step = env.step(action)
    step = trajectory.from_transition(time_step, policy_step.PolicyStep(action, (), ()), next_time_step)
    for k in range(copies):
      observation = step.observation[k]
      starts = stacks[k] is None or step.step_type[k] == ts.StepType.FIRST
      stacks[k] = observation[:-1] if starts else stacks[k][1:]
      stacks[k] = np.concatenate([stacks[k], observation[-1:]])
      if not np.array_equal(stacks[k], observation):
        raise AssertionError("an observation is not the stack of the frames before it in its episode")
      fields = {f: getattr(step, f)[k] for f in OTHER_FIELDS}
      fields["frame"] = observation[-1]
      fields["older"] = observation[:-1] if starts else np.zeros_like(observation[:-1])
      for name, value in fields.items():
        columns[k].setdefault(name, []).append(value)
    time_step = next_time_step
  pool = []
  for k in range(copies):
    arrays = {name: np.stack(values) for name, values in columns[k].items()}
    ends = np.flatnonzero(arrays["step_type"] == ts.StepType.LAST)
    if not len(ends):
      raise SystemExit(f"copy {k} finished no episode in {steps // copies} steps: raise --pool")
    cut = ends[-1] + 1
    starts = np.flatnonzero((arrays["step_type"][:cut] == ts.StepType.FIRST) | (np.arange(cut) == 0))
    pool.append(
      {
        **{name: a[:cut] for name, a in arrays.items() if name != "older"},
        "start_ids": starts,
        "start_older": arrays["older"][starts],
      }
    )
  return pool


def pool_steps(copy: dict[str, np.ndarray], steps: int):
  """`steps` trajectory steps (numpy, unbatched) of one copy's pool, cycled, with their stacks."""
  older = dict(zip(copy["start_ids"].tolist(), copy["start_older"], strict=True))
  length = len(copy["frame"])
  stack = None
  for n in range(steps):
    t = n % length
    frame = copy["frame"][t][None]
    stack = np.concatenate([older[t], frame]) if t in older else np.concatenate([stack[1:], frame])
    yield trajectory.Trajectory(
      step_type=copy["step_type"][t],
      observation=stack,
      action=copy["action"][t],
      policy_info=(),
      next_step_type=copy["next_step_type"][t],
      reward=copy["reward"][t],
      discount=copy["discount"][t],
    )


def serve(work: Path, layout: str, capacity: int) -> None:
  """--_serve: a Reverb server with an experience table of `layout`, checkpointed to (and
  loaded from) work/<layout>_checkpoints, until SIGTERM. Prints 'ready <port> <seconds>',
  the seconds the server took to start (to load a checkpoint, if any)."""
  spec, plan = pickle.loads((work / "spec.pkl").read_bytes())
  plan = dataclasses.replace(plan, frames_once=layout == FRAMES_ONCE)
  table = rr.experience_table(plan.signature(spec), capacity, min_size=1)
  start = time.perf_counter()
  server = rr.start_server([table], rr.free_port(), work / f"{layout}_checkpoints")
  print(f"ready {server.port} {time.perf_counter() - start:.3f}", flush=True)
  stopped = []
  signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
  while not stopped:
    time.sleep(0.2)
  server.stop()


def write(work: Path, layout: str, copy: int, steps: int, address: str, chunk_length: int) -> None:
  """--_write: one writer process (an actor's observer on one environment copy) writing
  `steps` of pool copy `copy`; waits for work/go, prints 'wrote <start> <end>' (time.time)."""
  spec, plan = pickle.loads((work / "spec.pkl").read_bytes())
  with np.load(work / f"pool_{copy}.npz") as data:
    pool = dict(data)
  client = reverb.Client(address)
  if layout == FRAMES_ONCE:  # the plan's writer, with this run's chunk length
    writer = rr.FrameWriter(client, spec, 1, plan.sequence_length, chunk_length=chunk_length)
  else:
    writer = dataclasses.replace(plan, frames_once=False).writer(client, spec, 1)
  # Stacks rebuilt on the fly (a copy of 28 KB per step, next to the writer's ~0.4 ms): a
  # list of them would hold 28 GB per 1M steps.
  batched = (tf.nest.map_structure(lambda x: np.asarray(x)[None], s) for s in pool_steps(pool, steps))
  (work / f"ready_{copy}").touch()
  while not (work / "go").exists():
    time.sleep(0.05)
  start = time.time()
  for n, step in enumerate(batched):
    writer(step)
    if n % 64 == 63:  # an actor flushes after every run of steps (run_actor.steps_per_run)
      writer.flush()
  writer.flush()
  writer.close()
  print(f"wrote {start:.6f} {time.time():.6f}", flush=True)


class Server:
  """A `--_serve` subprocess."""

  def __init__(self, work: Path, layout: str, capacity: int):
    command = [sys.executable, __file__, "--_serve", f"--_work={work}", f"--_layout={layout}"]
    command.append(f"--_capacity={capacity}")
    self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True, env=_quiet_env())
    line = self.process.stdout.readline().split()
    if not line or line[0] != "ready":
      raise SystemExit(f"the bench's Reverb server did not start ({line})")
    self.address, self.start_seconds = f"localhost:{line[1]}", float(line[2])
    self.client = rr.wait_for_server(self.address, 60, "bench", announce=False)

  def rss(self) -> float:
    return rss_mb(self.process.pid)

  def items(self) -> int:
    return int(self.client.server_info()[rr.EXPERIENCE].current_size)

  def stop(self) -> None:
    self.process.send_signal(signal.SIGTERM)
    self.process.wait()


def _quiet_env() -> dict:
  return dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")


def fill_server(work: Path, layout: str, items: int, writers: int, chunk_length: int) -> tuple[Server, dict]:
  """A server of `layout` filled with `items` items by `writers` writer processes at once."""
  server = Server(work, layout, capacity=items + writers)
  empty = server.rss()
  (work / "go").unlink(missing_ok=True)
  steps = -(-items // writers) + 1  # the first step of a writer makes no 2-step item
  procs = [
    subprocess.Popen(
      [
        sys.executable, __file__, "--_write", f"--_work={work}", f"--_layout={layout}", f"--_copy={k}",
        f"--_steps={steps}", f"--_address={server.address}", f"--chunk_length={chunk_length}",
      ],
      cwd=REPO, stdout=subprocess.PIPE, text=True, env=_quiet_env(),
    )
    for k in range(writers)
  ]  # fmt: skip
  while not all((work / f"ready_{k}").exists() for k in range(writers)):
    if any(p.poll() not in (None, 0) for p in procs):
      raise SystemExit("a bench writer process failed")
    time.sleep(0.2)
  (work / "go").touch()
  spans = []
  for p in procs:
    out, _ = p.communicate()
    if p.returncode != 0:
      raise SystemExit("a bench writer process failed")
    spans.append([float(x) for x in out.split()[-2:]])
  for k in range(writers):
    (work / f"ready_{k}").unlink()
  held = server.items()
  time.sleep(2)  # chunks the last items freed, the allocator settling
  figures = {
    "items": held,
    "empty_mb": empty,
    "rss_mb": server.rss(),
    "insert_rate": held / (max(e for _, e in spans) - min(s for s, _ in spans)),
  }
  figures["bytes_per_item"] = (figures["rss_mb"] - empty) * 2**20 / held
  return server, figures


def _memory_line(name: str, f: dict) -> str:
  per_million = f["bytes_per_item"] * 1e6 / 2**30
  return (
    f"  {name}: server RSS {f['empty_mb']:,.0f} MB empty -> {f['rss_mb']:,.0f} MB holding "
    f"{f['items']:,} transitions = {f['bytes_per_item']:,.0f} B per transition; 1M transitions: "
    f"{per_million:.2f} GiB + {f['empty_mb'] / 1024:.2f} GiB empty server = "
    f"{per_million + f['empty_mb'] / 1024:.2f} GiB"
  )


def learner_rates(parts, sources: dict, batches: int, updates: int, rounds: int) -> dict[str, dict]:
  """Per source (a replay buffer): transitions/s sampled through the gin's make_dataset and
  gradient steps/s of the trainer's compiled update on them; medians of interleaved rounds."""
  update = parts.trainer._update  # the gin's DQN update as OffPolicyTrainer compiles it
  batch = learning.configured(replay.make_dataset, "batch_size")
  loops = {}
  for name, source in sources.items():
    iterator = iter(replay.make_dataset(source))

    @tf.function(autograph=False)
    def sample(n, iterator=iterator):
      def body(i, total):
        experience, _ = next(iterator)
        return i + 1, total + tf.reduce_sum(tf.cast(experience.observation, tf.int32))

      return tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), tf.constant(0)))

    @tf.function(autograph=False)
    def train(n, iterator=iterator):
      def body(i, loss):
        experience, _ = next(iterator)
        return i + 1, update(experience).loss

      return tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), tf.constant(0.0)))

    sample(tf.constant(2))  # trace, start the pipeline's threads and streams
    if updates:
      train(tf.constant(2))
    loops[name] = (sample, train)
  rates = {name: {"sample": [], "train": []} for name in sources}
  for _ in range(rounds):
    for name, (sample, train) in loops.items():
      start = time.perf_counter()
      sample(tf.constant(batches))
      rates[name]["sample"].append(batches * batch / (time.perf_counter() - start))
      if updates:
        start = time.perf_counter()
        train(tf.constant(updates))
        rates[name]["train"].append(updates / (time.perf_counter() - start))
  return {
    name: {k: float(np.median(v)) if v else float("nan") for k, v in r.items()} for name, r in rates.items()
  }


def atari(args) -> None:
  items, writers = args.transitions, args.writers
  parse(
    ATARI_GIN,
    [
      f"collect/make_environment.num_envs = {writers}",
      "collect/make_environment.vector_env_fn = @atari_vector_env",
      "eval/make_environment.num_envs = 1",
      f"frame_stack_replay.capacity = {items + 2 * writers}",
    ],
  )
  plan = distributed.plan_from_gin()
  print(
    f"{ATARI_GIN}: replay {learning.configured(learning.OffPolicyTrainer, 'replay_fn').__name__}, "
    f"distributed layout: {'frames once' if plan.frames_once else 'whole stacks'}; {writers} writers, "
    f"chunks of {args.chunk_length} frames; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
    flush=True,
  )
  parts = experiment.build_components()
  spec = parts.agent.collect_data_spec
  work = Path(tempfile.mkdtemp(prefix="bench_distributed_"))
  try:
    (work / "spec.pkl").write_bytes(pickle.dumps((spec, plan)))
    start = time.perf_counter()
    pool = collect_pool(parts.collect_env, args.pool)
    for k, copy in enumerate(pool):
      np.savez(work / f"pool_{k}.npz", **copy)
    episodes = sum(int(np.sum(c["step_type"] == ts.StepType.LAST)) for c in pool)
    print(
      f"0. pool: {sum(len(c['frame']) for c in pool):,} Breakout steps ({episodes} games, random actions) "
      f"in {time.perf_counter() - start:.0f} s",
      flush=True,
    )

    print("1. Reverb server memory and inserts:", flush=True)
    old = None
    if args.old_transitions:  # 0: no comparison (at 1M the whole-stack server would not fit)
      old_server, old = fill_server(work, STACKS, args.old_transitions, writers, args.chunk_length)
      old_server.stop()
      print(_memory_line("whole stacks per step (today's layout, WindowWriter)", old), flush=True)
    server, new = fill_server(work, FRAMES_ONCE, items, writers, args.chunk_length)
    print(_memory_line("frames once (FrameWriter)", new), flush=True)
    print(
      f"  insert rate with {writers} writer processes: frames once {new['insert_rate']:,.0f} items/s"
      + (f", whole stacks {old['insert_rate']:,.0f} items/s" if old else ""),
      flush=True,
    )
    local = parts.trainer.replay
    print(
      f"  in-process FrameStackReplay: {local.store._frames[0, 0].nbytes:,} B per transition (its frames)",
      flush=True,
    )

    print("2. Checkpoint of the frame-once server:", flush=True)
    start = time.perf_counter()
    saved = Path(server.client.checkpoint())
    save_seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in saved.rglob("*") if f.is_file())
    server.stop()
    server = Server(work, FRAMES_ONCE, capacity=items + writers)
    restored = server.items()
    print(
      f"  checkpoint(): {save_seconds:.1f} s, {size / 2**20:,.0f} MiB on disk "
      f"({size / new['items']:,.0f} B per transition); a new server loaded it in "
      f"{server.start_seconds:.1f} s: {restored:,} items, RSS {server.rss():,.0f} MB",
      flush=True,
    )
    if restored != new["items"]:
      raise SystemExit(f"the restored server holds {restored} items, the saved one {new['items']}")

    print("3. Learner side (restored server over gRPC vs in-process FrameStackReplay):", flush=True)
    rows = [pool_steps(copy, -(-items // writers) + 1) for copy in pool]
    others = lambda steps: [np.stack([getattr(s, f) for s in steps]) for f in OTHER_FIELDS]  # noqa: E731
    for steps in zip(*rows, strict=True):
      local.store.add(
        np.stack([s.observation for s in steps]), np.stack([s.step_type for s in steps]), others(steps)
      )
    source = plan.replay(spec, server.address)
    rates = learner_rates(parts, {"reverb": source, "local": local}, args.batches, args.updates, args.rounds)
    server.stop()
    reverb_rate, local_rate = rates["reverb"], rates["local"]
    print(
      f"  sampling, batch {plan.batch_size}: Reverb {reverb_rate['sample']:,.0f} transitions/s, in-process "
      f"{local_rate['sample']:,.0f} transitions/s (ratio {reverb_rate['sample'] / local_rate['sample']:.2f})",
      flush=True,
    )
    if args.updates:
      print(
        f"  DQN update on those batches: Reverb {reverb_rate['train']:.1f} gradient steps/s, in-process "
        f"{local_rate['train']:.1f} (ratio {reverb_rate['train'] / local_rate['train']:.2f}; target >= 0.8)",
        flush=True,
      )
  finally:
    parts.close()
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", default="gin/dqn_cartpole.gin")
  parser.add_argument("--actors", default="1,2,4")
  parser.add_argument("--seconds", type=float, default=30.0)
  parser.add_argument("--env_steps", type=int, default=5_000, help="single-process comparison")
  parser.add_argument("--collection_only", action="store_true", help="part 1 only (any gin, Atari too)")
  parser.add_argument("--atari", action="store_true", help="Breakout's replay in Reverb (see above)")
  parser.add_argument(
    "--transitions", type=int, default=200_000, help="--atari: items in the frame-once server"
  )
  parser.add_argument(
    "--old_transitions", type=int, default=20_000, help="--atari: items, whole-stack server (0: skip it)"
  )
  parser.add_argument("--pool", type=int, default=20_000, help="--atari: real Breakout steps cycled through")
  parser.add_argument("--writers", type=int, default=2, help="--atari: writer processes (env copies)")
  parser.add_argument("--chunk_length", type=int, default=rr.FRAME_CHUNK, help="--atari: frames per chunk")
  parser.add_argument("--batches", type=int, default=100, help="--atari: batches per sampling round")
  parser.add_argument("--updates", type=int, default=20, help="--atari: DQN updates per round (0: none)")
  parser.add_argument("--rounds", type=int, default=5, help="--atari: interleaved rounds")
  for hidden in ("_serve", "_write"):  # the bench's own subprocesses
    parser.add_argument(f"--{hidden}", action="store_true", help=argparse.SUPPRESS)
  for hidden in ("_work", "_layout", "_address"):
    parser.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
  for hidden in ("_capacity", "_copy", "_steps"):
    parser.add_argument(f"--{hidden}", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  os.chdir(REPO)
  if args._serve:
    return serve(Path(args._work), args._layout, args._capacity)
  if args._write:
    return write(Path(args._work), args._layout, args._copy, args._steps, args._address, args.chunk_length)
  if args.atari:
    return atari(args)
  print(f"{os.cpu_count()} CPU cores; {args.gin_file}")
  print("1-2. Actors (collection only) and learner:")
  counts = [int(n) for n in args.actors.split(",")]
  measure_collection(args.gin_file, counts, args.seconds, with_learner=not args.collection_only)
  if args.collection_only:
    return
  print("3. Reverb vs in-process replay, one process:")
  single_process(args.gin_file, args.env_steps)


if __name__ == "__main__":
  main()
