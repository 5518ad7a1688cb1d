"""Reverb replay: the tables, the server and the writers that distributed collection uses.

    pipelines-train --gin_file=gin/dqn_cartpole.gin \
        --gin_bindings='OffPolicyTrainer.replay_fn = @reverb_replay' --root_dir=runs/reverb

With that one binding an in-process experiment keeps its replay in an embedded Reverb
server instead of a `TFUniformReplayBuffer`; `pipelines-launch` (pipelines/distributed/distributed.py)
runs the same server as its own process for separate actors and a learner.

A Reverb server holds three tables:
  experience  trajectory windows: uniform sampling for replay agents (DQN family), a
              queue read once for on-policy agents (PPO, A2C); with a frame-stack replay
              (`frame_stack_replay`, Atari) each stored frame once, items referencing them
              (`FrameWriter`, `ReverbFrameReplay`);
  variables   the latest policy weights, train step and env step count (one item,
              TF-Agents' `ReverbVariableContainer`);
  reports     what actors tell the learner: env steps taken, episodes and their returns.

Security: a Reverb server has no authentication and listens on all interfaces.
"""

from __future__ import annotations

import collections
import dataclasses
import shutil
import tempfile
import time
import weakref
from pathlib import Path

import gin
import numpy as np
import reverb
import tensorflow as tf
import tree
from tf_agents.replay_buffers import replay_buffer, reverb_replay_buffer
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from pipelines import signals
from pipelines.errors import PipelineError
from pipelines.replay import replay
from pipelines.replay.addresses import check_port_free, free_port, parse_address  # noqa: F401  (re-exported)


@dataclasses.dataclass
class ReplayPlan:
  """What a Reverb server, its actors and the learner must agree on for one trainer: item
  shape, table size, rate limit and batches (`OffPolicyTrainer.replay_plan()`,
  `OnPolicyTrainer.replay_plan()`)."""

  on_policy: bool
  sequence_length: int  # steps per experience item
  stride: int  # env steps of one copy between items
  capacity: int  # items the experience table holds
  min_size: int  # items before the learner may sample
  samples_per_insert: float | None  # the replay ratio held by the rate limiter
  batch_size: int  # items per gradient step
  train_steps_per_iteration: int
  env_steps_per_iteration: int  # env steps one learner iteration stands for
  # Items reference frames stored once per step (`FrameWriter`) instead of whole stacked
  # observations (`WindowWriter`): the trainer's replay is a frame-stack replay.
  frames_once: bool = False
  # The learner compiles its update with XLA as the in-process trainer would (the Atari gins
  # turn it off: oneDNN's CPU convolutions beat XLA:CPU there).
  jit_compile: bool = False

  def signature(self, data_spec):
    """The experience table's item signature for trajectories of `data_spec`."""
    if self.frames_once:
      return frame_signature(data_spec, self.sequence_length)
    return tensor_spec.add_outer_dim(tensor_spec.from_spec(data_spec))

  def tables(self, data_spec, variables) -> list:
    experience = experience_table(
      self.signature(data_spec), self.capacity, self.min_size, self.samples_per_insert, queue=self.on_policy
    )
    return [experience, variables_table(variables), reports_table()]

  def writer(self, client: reverb.Client, data_spec, num_envs: int) -> WindowWriter | FrameWriter:
    """An actor's observer writing its `num_envs` copies' steps as this plan's items."""
    if self.frames_once:
      return FrameWriter(client, data_spec, num_envs, self.sequence_length)
    return WindowWriter(client, num_envs, self.sequence_length, self.stride)

  def replay(self, data_spec, address: str, rate_limiter_timeout_ms: int = -1) -> replay_buffer.ReplayBuffer:
    """The learner's view of the experience table: a TF-Agents buffer read by `as_dataset`."""
    if self.frames_once:
      return ReverbFrameReplay(
        data_spec, address, self.sequence_length, rate_limiter_timeout_ms=rate_limiter_timeout_ms
      )
    return reverb_replay_buffer.ReverbReplayBuffer(
      data_spec,
      EXPERIENCE,
      sequence_length=self.sequence_length,
      server_address=address,
      rate_limiter_timeout_ms=rate_limiter_timeout_ms,
    )


EXPERIENCE = "experience"
VARIABLES = "variables"  # reverb_variable_container.DEFAULT_TABLE
REPORTS = "reports"
REPORT_SPEC = {
  "actor_id": tf.TensorSpec([], tf.int64),
  "env_steps": tf.TensorSpec([], tf.int64),
  "episodes": tf.TensorSpec([], tf.int64),
  "episode_return_sum": tf.TensorSpec([], tf.float64),
  "games": tf.TensorSpec([], tf.int64),
  "game_return_sum": tf.TensorSpec([], tf.float64),
}
SECURITY_NOTE = (
  "note: the Reverb server has no authentication and listens on all interfaces (*:{port}); "
  "run it only on a trusted network, behind a firewall or through an SSH tunnel"
)


def experience_table(
  signature,
  capacity: int,
  min_size: int,
  samples_per_insert: float | None = None,
  queue: bool = False,
) -> reverb.Table:
  """Items of `signature` (`ReplayPlan.signature`). Uniform replay (optionally held to
  `samples_per_insert` sampled items per inserted item, Reverb's rate limiter) or a queue
  read exactly once."""
  if queue:
    return reverb.Table.queue(EXPERIENCE, max_size=capacity, signature=signature)
  if samples_per_insert:
    # The error buffer: how far (in sampled items) actors and learner may drift apart. A 10%
    # tolerance on the ratio over the replay start (Acme's convention), so that the learner
    # trains at most ~min_size / 10 inserts ahead of the data, as in-process does.
    buffer = max(0.1 * samples_per_insert * min_size, 2 * samples_per_insert)
    limiter = reverb.rate_limiters.SampleToInsertRatio(samples_per_insert, max(min_size, 1), buffer)
  else:
    limiter = reverb.rate_limiters.MinSize(max(min_size, 1))
  return reverb.Table(
    EXPERIENCE,
    sampler=reverb.selectors.Uniform(),
    remover=reverb.selectors.Fifo(),
    max_size=capacity,
    rate_limiter=limiter,
    signature=signature,
  )


def variables_table(variables) -> reverb.Table:
  signature = tf.nest.map_structure(lambda v: tf.TensorSpec(v.shape, v.dtype), variables)
  return reverb.Table(
    VARIABLES,
    sampler=reverb.selectors.Uniform(),
    remover=reverb.selectors.Fifo(),
    max_size=1,
    rate_limiter=reverb.rate_limiters.MinSize(1),
    signature=signature,
  )


def reports_table() -> reverb.Table:
  return reverb.Table.queue(REPORTS, max_size=1_000_000, signature=REPORT_SPEC)


def start_server(tables, port: int | None, checkpoint_dir: Path | None = None, fallback: Path | None = None):
  """A Reverb server; with `checkpoint_dir` it loads its latest checkpoint from there."""
  if port is not None:
    check_port_free(port)
  checkpointer = None
  if checkpoint_dir is not None:
    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    checkpointer = reverb.checkpointers.DefaultCheckpointer(
      str(checkpoint_dir), fallback_checkpoint_path=str(fallback) if fallback else None
    )
  return reverb.Server(tables, port=port, checkpointer=checkpointer)


def wait_for_server(address: str, timeout: float, who: str, announce: bool = True) -> reverb.Client:
  """Waits for a server at `address` (roles start in any order); a clear error at `timeout`."""
  parse_address(address)
  client = reverb.Client(address)
  deadline = time.monotonic() + timeout
  waiting = signals.WaitingLine(f"{who}: waiting for replay server at {address}", every=10)
  while True:
    try:
      client.server_info(timeout=2)
      return client
    except Exception:  # noqa: BLE001  (grpc's errors: unavailable, deadline exceeded)
      if time.monotonic() > deadline:
        raise PipelineError(f"{who}: no replay server at {address} after {timeout:.0f} s") from None
      if announce:
        waiting.tick()
      time.sleep(0.2)


def drain_reports(client: reverb.Client, timeout: int = 30) -> list[dict]:
  """Takes every pending actor report off the reports queue, as Python scalars."""
  pending = client.server_info(timeout=timeout)[REPORTS].current_size
  if not pending:
    return []
  samples = client.sample(REPORTS, num_samples=pending, emit_timesteps=False, unpack_as_table_signature=True)
  return [{key: np.asarray(value).item() for key, value in sample.data.items()} for sample in samples]


class WindowWriter:
  """Python observer writing each environment copy's steps to Reverb as items of `length`
  consecutive steps, one item every `stride` steps, across episode boundaries as a
  `TFUniformReplayBuffer` would sample them (DQN masks transitions out of a last step;
  PPO reads step types). Call it with batched trajectories: one writer per copy."""

  def __init__(self, client: reverb.Client, num_envs: int, length: int, stride: int, table: str = EXPERIENCE):
    self._writers = [client.trajectory_writer(num_keep_alive_refs=length) for _ in range(num_envs)]
    self._counts = [0] * num_envs
    self._length = length
    self._stride = stride
    self._table = table

  def __call__(self, trajectory) -> None:
    for i, writer in enumerate(self._writers):
      writer.append(tf.nest.map_structure(lambda x, i=i: x[i], trajectory))
      self._counts[i] += 1
      count = self._counts[i]
      if count >= self._length and (count - self._length) % self._stride == 0:
        window = tf.nest.map_structure(lambda column: column[-self._length :], writer.history)
        writer.create_item(self._table, priority=1.0, trajectory=window)

  def flush(self, timeout_ms: int | None = None) -> bool:
    """Waits until the items are in the table (the rate limiter may hold them back);
    False when `timeout_ms` passed first."""
    for writer in self._writers:
      try:
        writer.flush(timeout_ms=timeout_ms)
      except reverb.DeadlineExceededError:
        return False
    return True

  def close(self) -> None:
    for writer in self._writers:
      writer.close()


# ---------------------------------------------------------------- frames stored once

FRAMES = "frames"
STEPS = "steps"
# Frames per chunk, Reverb's unit of compression and of transfer to a sampler. Longer chunks
# compress Breakout's frames a little better but every sampled item decompresses the chunks
# it spans whole: `scripts/bench_distributed.py --atari --chunk_length=N` measures both sides.
FRAME_CHUNK = 16


def frame_stack(data_spec) -> int:
  """Frames per stacked observation: the observation is (stack, *frame), oldest first."""
  return int(data_spec.observation.shape[0])


def frame_signature(data_spec, num_steps: int) -> dict:
  """An item of `num_steps` steps in the frame-once layout: `frames`, the last
  `num_steps * stack` frames written up to its newest step ([num_steps * stack, *frame],
  references to frames stored once), where `stacked_observations` finds each step's stack;
  `steps`, every other trajectory field ([num_steps, ...])."""
  observation = data_spec.observation
  rest = tensor_spec.from_spec(data_spec._replace(observation=()))
  return {
    FRAMES: tf.TensorSpec([num_steps * frame_stack(data_spec), *observation.shape[1:]], observation.dtype),
    STEPS: tensor_spec.add_outer_dim(rest, num_steps),
  }


def stacked_observations(frames: tf.Tensor, step_type: tf.Tensor, stack: int) -> tf.Tensor:
  """Each step's stacked observation, [batch, steps, stack, *frame], from a batch of
  frame-once items: `frames` [batch, steps * stack, *frame] ends with the newest step's
  frame, and a step's newest frame is one frame after the step before it, or `stack`
  frames after it where it begins an episode (`FrameWriter` wrote that episode's older
  frames in between)."""
  steps = step_type.shape[1]
  begins = tf.cast(tf.equal(step_type[:, 1:], ts.StepType.FIRST), tf.int32)
  gaps = 1 + (stack - 1) * begins  # from step k - 1's newest frame to step k's, k >= 1
  from_end = tf.concat([tf.cumsum(gaps, axis=1, reverse=True), tf.zeros_like(gaps[:, :1])], axis=1)
  newest = steps * stack - 1 - from_end  # [batch, steps]
  return tf.gather(frames, newest[:, :, None] - (stack - 1) + tf.range(stack), batch_dims=1)


class FrameWriter:
  """Python observer writing each environment copy's steps to Reverb, each stacked
  observation's newest frame once, and an item of `length` consecutive steps at every step
  (as `WindowWriter` with stride 1). One Reverb writer per copy; call it with batched
  trajectories.

  A frame-stack observation (stack, *frame) shares all but its newest frame with the step
  before it in the same episode, so each step appends `observation[-1]` to the `frames`
  column and its other fields to `steps`. At an episode's first step (and a writer's first
  step) the stack's older frames are appended first, as steps holding only a frame (zeros
  after a game reset, real frames where ale-py's vector env starts a life's episode with
  them): every step's stack is then the `stack` frames written up to its own, exactly as
  the environment stacked them (as `FrameStore` rebuilds them). An item references the
  last `length * stack` frames up to its newest step, a contiguous run (Reverb merges the
  references of one chunk into one slice, so a column's references must be consecutive),
  which holds every step's stack, those of an item joining two episodes too; the learner
  picks them out (`stacked_observations`). Frames are chunked `chunk_length` at a time, and
  a chunk shared by the items over it is stored once.
  """

  def __init__(
    self,
    client: reverb.Client,
    data_spec,
    num_envs: int,
    length: int,
    chunk_length: int = FRAME_CHUNK,
    table: str = EXPERIENCE,
  ):
    self._length = length
    self._stack = frame_stack(data_spec)
    self._frame = np.zeros(data_spec.observation.shape[1:], data_spec.observation.dtype.as_numpy_dtype)
    self._chunk_length = chunk_length
    self._table = table
    # An item's frames reach `length * stack` frames back from its newest step's.
    keep = max(length * self._stack, chunk_length)
    # Column paths as Reverb names them: dm-tree's paths of the structure appended.
    appended = {FRAMES: 0, STEPS: data_spec._replace(observation=())}
    columns = [path for path, _ in tree.flatten_with_path(appended)]
    self._writers = []
    for _ in range(num_envs):
      writer = client.trajectory_writer(num_keep_alive_refs=keep)
      for path in columns:  # Reverb's auto-tuned chunks stay short with a short history
        writer.configure(path, num_keep_alive_refs=keep, max_chunk_length=chunk_length)
      self._writers.append(writer)
    self._appended = [0] * num_envs  # frames appended per writer
    # Frames appended up to each of the last `length` steps (its newest frame included).
    self._steps = [collections.deque(maxlen=length) for _ in range(num_envs)]

  def __call__(self, trajectory) -> None:
    for i, writer in enumerate(self._writers):
      step = tf.nest.map_structure(lambda x, i=i: x[i], trajectory)
      frames = step.observation
      if not self._appended[i] or step.step_type == ts.StepType.FIRST:
        older = list(frames[:-1])
        if not self._appended[i]:
          # The writer's first item reaches (length - 1) x (stack - 1) frames further back
          # than its first step's stack: frames no step uses, zero.
          older = [self._frame] * ((self._length - 1) * (self._stack - 1)) + older
        for frame in older:
          writer.append({FRAMES: frame})
        self._appended[i] += len(older)
      writer.append({FRAMES: frames[-1], STEPS: step._replace(observation=())})
      self._appended[i] += 1
      steps = self._steps[i]
      steps.append(self._appended[i])
      if len(steps) == self._length:
        history = writer.history
        at = [s - self._appended[i] - 1 for s in steps]  # from the end: the newest is -1
        item = {
          FRAMES: history[FRAMES][-self._length * self._stack :],
          STEPS: tf.nest.map_structure(lambda column, at=at: column[at], history[STEPS]),
        }
        writer.create_item(self._table, priority=1.0, trajectory=item)

  def flush(self, timeout_ms: int | None = None) -> bool:
    """Waits until the items are in the table but those over a chunk still being filled
    (the rate limiter may hold them back); False when `timeout_ms` passed first. Flushing
    everything would cut chunks short at every call (an actor flushes every few steps)."""
    for writer in self._writers:
      try:
        writer.flush(block_until_num_items=self._chunk_length, timeout_ms=timeout_ms)
      except reverb.DeadlineExceededError:
        return False
    return True

  def close(self) -> None:
    """Sends every item, then closes the writers."""
    for writer in self._writers:
      writer.flush()
      writer.close()


class ReverbFrameReplay(replay.DatasetOnlyReplay):
  """The learner's side of the frame-once layout: items sampled from a Reverb table of
  `frame_signature` items and turned back into trajectories of stacked observations, as a
  TF-Agents buffer read through `as_dataset` (elements: (trajectory, reverb.SampleInfo)).

  Sampling runs as TF-Agents' `ReverbReplayBuffer` does (one Reverb stream per item of a
  batch, up to 32); the stacks are gathered from each batch's frames.
  """

  def __init__(
    self,
    data_spec,
    address: str,
    num_steps: int,
    table: str = EXPERIENCE,
    rate_limiter_timeout_ms: int = -1,
  ):
    super().__init__(data_spec, capacity=-1)
    self._address = address
    self._num_steps = num_steps
    self._table = table
    self._timeout = rate_limiter_timeout_ms

  def _as_dataset(self, sample_batch_size=None, num_steps=None, sequence_preprocess_fn=None,
                  num_parallel_calls=None):  # fmt: skip
    if sample_batch_size is None or num_steps not in (None, self._num_steps):
      raise ValueError(f"ReverbFrameReplay samples batches of its items' {self._num_steps} steps")
    if sequence_preprocess_fn is not None:
      raise ValueError("ReverbFrameReplay takes no sequence_preprocess_fn")
    signature = frame_signature(self._data_spec, self._num_steps)
    dtypes = tf.nest.map_structure(lambda s: s.dtype, signature)
    shapes = tf.nest.map_structure(lambda s: s.shape, signature)
    streams = min(sample_batch_size, 32)
    per_stream = sample_batch_size // streams

    def stream(_):
      return reverb.TrajectoryDataset(
        self._address,
        self._table,
        dtypes,
        shapes,
        max_in_flight_samples_per_worker=3 * per_stream,  # TF-Agents' ~3x the batch
        num_workers_per_iterator=-1,
        rate_limiter_timeout_ms=self._timeout,
      )

    stack = frame_stack(self._data_spec)

    def trajectories(sample):
      steps = sample.data[STEPS]
      observation = stacked_observations(sample.data[FRAMES], steps.step_type, stack)
      return steps._replace(observation=observation), sample.info

    dataset = tf.data.Dataset.range(streams).interleave(
      stream, cycle_length=streams, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False
    )
    dataset = dataset.batch(sample_batch_size, drop_remainder=True)
    return dataset.map(trajectories, num_parallel_calls=num_parallel_calls or tf.data.AUTOTUNE)

  def _num_frames(self):
    raise NotImplementedError("ReverbFrameReplay reads a server's table: ask the server (server_info)")

  def _add_batch(self, items):
    raise NotImplementedError("actors write frame-once items with FrameWriter")


class ReverbReplay:
  """A replay in an embedded Reverb server, used like a TF-Agents buffer by
  `OffPolicyTrainer`: `add_batch` inside the collection graph, `as_dataset` to sample,
  `save_to`/`restore_from` for checkpoints (a Reverb checkpoint of the table)."""

  def __init__(self, data_spec, num_envs: int, capacity: int, sequence_length: int = 2):
    self._spec = data_spec
    self._num_envs = num_envs
    self._length = sequence_length
    signature = tensor_spec.add_outer_dim(tensor_spec.from_spec(data_spec))
    self._tables = lambda: [experience_table(signature, capacity, min_size=1)]
    self._root = Path(tempfile.mkdtemp(prefix="reverb_replay_"))
    # Removed when this object goes or, at the latest, by the exit handlers (which
    # `cli.exit_process` runs too, unlike `__del__`).
    weakref.finalize(self, shutil.rmtree, self._root, True)
    self._server = start_server(self._tables(), None, self._root / "live")
    self.address = f"localhost:{self._server.port}"
    self._client = reverb.Client(self.address)
    self._writer: WindowWriter | None = None
    self._buffer = reverb_replay_buffer.ReverbReplayBuffer(
      data_spec, EXPERIENCE, sequence_length=sequence_length, server_address=self.address
    )

  def _write(self, *flat) -> np.int64:
    if self._writer is None:
      self._writer = WindowWriter(self._client, self._num_envs, self._length, stride=1)
    self._writer(tf.nest.pack_sequence_as(self._spec, list(flat)))
    return np.int64(0)

  def add_batch(self, trajectory):
    return tf.numpy_function(self._write, tf.nest.flatten(trajectory), tf.int64, stateful=True)

  def as_dataset(self, sample_batch_size=None, num_steps=None, num_parallel_calls=None):
    return self._buffer.as_dataset(
      sample_batch_size=sample_batch_size, num_steps=num_steps, num_parallel_calls=num_parallel_calls
    )

  def num_frames(self) -> int:
    return int(self._client.server_info()[EXPERIENCE].current_size)

  def end_stored_episodes(self) -> None:
    """Nothing to end: items are whole windows, and the writer of a resumed run starts with
    an empty history, so no item joins the steps before and after a restart."""

  def save_to(self, directory: Path) -> None:
    if self._writer is not None:
      self._writer.flush()
    path = self._client.checkpoint()
    Path(directory).mkdir(parents=True)
    shutil.move(path, Path(directory) / "reverb")

  def restore_from(self, directory: Path) -> None:
    """Restarts the embedded server, on the same port, from the saved table. Raises if the
    checkpoint is incomplete (Reverb would otherwise start empty) or does not load; a later
    call with another checkpoint still works."""
    saved = Path(directory) / "reverb"
    if not (saved / "DONE").is_file():  # Reverb writes DONE after the tables
      raise FileNotFoundError(f"{saved} holds no complete Reverb checkpoint (no DONE file)")
    port = self._server.port
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    self._server.stop()
    live = self._root / f"live-{time.monotonic_ns()}"
    self._server = start_server(self._tables(), port, live, fallback=saved)
    self._client = wait_for_server(self.address, timeout=60, who="replay", announce=False)  # gRPC reconnects


@gin.configurable
def reverb_replay(
  data_spec, num_envs: int, capacity: int = 100_000, sequence_length: int = 2
) -> ReverbReplay:
  """An in-process replay kept in an embedded Reverb server (`OffPolicyTrainer.replay_fn`).

  capacity: transitions held (env steps). sequence_length: steps per sampled item, as
  `make_dataset.num_steps` (2 for a one-step TD update).
  """
  return ReverbReplay(data_spec, num_envs, capacity, sequence_length)
