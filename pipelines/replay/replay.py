"""Replay: where collected trajectories wait to be sampled by the learner.

    pipelines-train --gin_file=gin/dqn_cartpole.gin \
        --gin_bindings='uniform_replay.capacity = 50_000' --root_dir=runs/small_replay

A replay factory takes the agent's `collect_data_spec` and the number of environment
copies and returns a TF-Agents `ReplayBuffer`; `make_dataset` turns it into the
prefetched `tf.data` pipeline the learner reads.
"""

from __future__ import annotations

import threading
from pathlib import Path

import gin
import numpy as np
import tensorflow as tf
from tf_agents.replay_buffers import replay_buffer, tf_uniform_replay_buffer
from tf_agents.trajectories import time_step as ts


class UniformReplay(tf_uniform_replay_buffer.TFUniformReplayBuffer):
  """TF-Agents' uniform replay, plus what a resumed run needs (`end_stored_episodes`)."""

  def end_stored_episodes(self) -> None:
    """Ends the stored episodes of every copy, for a run resumed from a checkpoint.

    The newest stored step's successor was never stored, and the restarted environment
    begins a new episode: stored as it is, that step and the restart's first step would
    sample as a transition joining two episodes. The newest step becomes a step between
    episodes (LAST, masked by every loss) and the one before it the episode's end (its own
    discount decides whether it bootstraps), as if a time limit had ended it there.
    """
    newest = int(self._get_last_id())
    if newest < 0:
      return
    slots = self._data_table.slots
    last = tf.fill([self._batch_size], tf.constant(ts.StepType.LAST, self.data_spec.step_type.dtype))
    self._data_table.write(newest % self._max_length + self._batch_offsets, [last], [slots.step_type])
    if newest >= 1:
      rows = (newest - 1) % self._max_length + self._batch_offsets
      self._data_table.write(rows, [last], [slots.next_step_type])


@gin.configurable
def uniform_replay(data_spec, num_envs: int, capacity: int = 100_000) -> UniformReplay:
  """A `TFUniformReplayBuffer` holding `capacity` transitions in all (env steps)."""
  return UniformReplay(data_spec, batch_size=num_envs, max_length=max(capacity // num_envs, 1))


@gin.configurable
def make_dataset(
  buffer: replay_buffer.ReplayBuffer,
  batch_size: int = 64,
  num_steps: int = 2,
  prefetch: int = 0,
) -> tf.data.Dataset:
  """Uniform samples of `num_steps` consecutive steps (2 for a one-step TD update).

  prefetch: batches sampled ahead in background threads. 0 (the default) samples each
    batch when the learner asks for it, inside the training graph, so that a seed gives
    the same run every time; prefetching overlaps sampling with training but makes what
    is sampled depend on thread timing.
  """
  if prefetch <= 0:
    return buffer.as_dataset(sample_batch_size=batch_size, num_steps=num_steps)
  return buffer.as_dataset(sample_batch_size=batch_size, num_steps=num_steps, num_parallel_calls=2).prefetch(
    prefetch
  )


class FrameStore:
  """Numpy ring buffer of trajectories whose observations are frame stacks, one frame each.

  A stacked observation (stack, *frame) shares all but its newest frame with the previous
  step, so each step stores only `observation[-1]`. A stack is rebuilt on sampling from the
  frames before it in the same episode; the older frames of an episode's first observation
  (zeros after a game reset, real frames after a life loss on ale-py's vector env) are kept
  beside it, so rebuilt stacks equal what the environment emitted. One ring row per
  environment copy; every other trajectory field is stored as is.
  """

  def __init__(self, data_spec, num_envs: int, capacity: int, seed: int | None = None):
    obs_spec = data_spec.observation
    self._stack = int(obs_spec.shape[0])
    self._rows = num_envs
    self._length = max(capacity // num_envs, self._stack + 2)
    self._frames = np.zeros((num_envs, self._length, *obs_spec.shape[1:]), obs_spec.dtype.as_numpy_dtype)
    self._other_specs = tf.nest.flatten(data_spec._replace(observation=()))
    # Positions of the step-type fields among the flattened non-observation fields.
    positions = tf.nest.pack_sequence_as(data_spec._replace(observation=()), range(len(self._other_specs)))
    self._step_type_field, self._next_step_type_field = positions.step_type, positions.next_step_type
    self._other = [
      np.zeros((num_envs, self._length, *s.shape), s.dtype.as_numpy_dtype) for s in self._other_specs
    ]
    self._age = np.zeros((num_envs, self._length), np.int64)  # steps since the episode's first step
    self._first_frames: list[dict[int, np.ndarray]] = [{} for _ in range(num_envs)]
    self._added = 0  # steps added per row
    self._lock = threading.Lock()
    # None: drawn from NumPy's global generator, which build_components seeds with the
    # experiment's seed (as TensorFlow's global seed drives the uniform replay's sampling).
    self._rng = np.random.default_rng(np.random.randint(2**31) if seed is None else seed)

  @property
  def num_frames(self) -> int:
    return min(self._added, self._length) * self._rows

  def add(self, observation: np.ndarray, step_type: np.ndarray, others: list[np.ndarray]) -> None:
    """Adds one step per row: `observation` is (rows, stack, *frame)."""
    with self._lock:
      slot = self._added % self._length
      if self._added >= self._length:
        for firsts in self._first_frames:
          firsts.pop(self._added - self._length, None)
      previous = self._age[:, (self._added - 1) % self._length] if self._added else -1
      first = step_type == ts.StepType.FIRST
      self._age[:, slot] = np.where(first | (self._added == 0), 0, previous + 1)
      self._frames[:, slot] = observation[:, -1]
      for row in np.flatnonzero(self._age[:, slot] == 0):
        self._first_frames[row][self._added] = observation[row, :-1].copy()
      for array, value in zip(self._other, others, strict=True):
        array[:, slot] = value
      self._added += 1

  def end_stored_episodes(self) -> None:
    """Ends every row's stored episode, for a resumed run (see `UniformReplay`'s)."""
    with self._lock:
      if not self._added:
        return
      self._other[self._step_type_field][:, (self._added - 1) % self._length] = ts.StepType.LAST
      if self._added >= 2:
        self._other[self._next_step_type_field][:, (self._added - 2) % self._length] = ts.StepType.LAST

  def sample(self, batch_size: int, num_steps: int):
    """`batch_size` runs of `num_steps` consecutive steps: (observations, others, ids)."""
    with self._lock:
      oldest = max(0, self._added - self._length)
      # A stack reaches back stack - 1 steps; those must still be in the ring.
      low = oldest + (self._stack - 1 if oldest else 0)
      high = self._added - num_steps
      if high < low:
        raise ValueError(f"replay holds {self._added} steps per row, too few to sample {num_steps}")
      rows = self._rng.integers(0, self._rows, batch_size)
      starts = self._rng.integers(low, high + 1, batch_size)
      return self._gather(rows, starts, num_steps)

  def gather(self, rows: np.ndarray, starts: np.ndarray, num_steps: int):
    """The runs of `num_steps` steps from step `starts[b]` of row `rows[b]` (step numbers
    count from the first step added), as `sample` returns them; the steps must still be held."""
    with self._lock:
      return self._gather(np.asarray(rows), np.asarray(starts), num_steps)

  def _gather(self, rows: np.ndarray, starts: np.ndarray, num_steps: int):
    batch_size = len(rows)
    rows = rows[:, None]
    ids = starts[:, None] + np.arange(num_steps)
    slots = ids % self._length
    age = self._age[rows, slots]
    stacks = np.empty((batch_size, num_steps, self._stack, *self._frames.shape[2:]), self._frames.dtype)
    for j in range(self._stack):
      back = self._stack - 1 - j
      stacks[:, :, j] = self._frames[rows, (ids - back) % self._length]
      for b, s in np.argwhere(back > age):  # before the episode's first step
        a = age[b, s]
        stacks[b, s, j] = self._first_frames[rows[b, 0]][ids[b, s] - a][j + a]
    others = [array[rows, slots] for array in self._other]
    return stacks, others, ids

  def state(self) -> dict[str, np.ndarray]:
    used = min(self._added, self._length)
    firsts = [(row, i, f) for row, d in enumerate(self._first_frames) for i, f in d.items()]
    return {
      "added": np.int64(self._added),
      "frames": self._frames[:, :used],
      "age": self._age[:, :used],
      **{f"field_{k}": a[:, :used] for k, a in enumerate(self._other)},
      "first_rows": np.array([r for r, _, _ in firsts], np.int64),
      "first_ids": np.array([i for _, i, _ in firsts], np.int64),
      "first_frames": np.stack([f for *_, f in firsts]) if firsts else np.zeros((0,)),
    }

  def save_to(self, directory: Path) -> None:
    """One .npy file per array, written from the ring itself (no second copy in memory)."""
    directory.mkdir(parents=True)
    with self._lock:
      for name, array in self.state().items():
        _save_npy(directory / f"{name}.npy", array)

  def restore_from(self, directory: Path) -> None:
    """Loads a `save_to` folder. Every file is opened and its shape checked before anything
    is copied, so a missing, truncated or mismatched file raises and leaves the store as it was."""
    names = ["added", "frames", "age", *(f"field_{k}" for k in range(len(self._other)))]
    names += ["first_rows", "first_ids", "first_frames"]
    # Memory-mapped: np.load reads the header and checks the file holds the whole array.
    arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in names}
    rows, used = arrays["frames"].shape[:2]
    if used > self._length or rows != self._rows:
      raise ValueError(f"replay checkpoint in {directory} does not fit this buffer's shape")
    for name in ["age", *(f"field_{k}" for k in range(len(self._other)))]:
      if arrays[name].shape[:2] != (rows, used):
        raise ValueError(f"{name}.npy holds {arrays[name].shape[:2]} steps, frames.npy {(rows, used)}")
    firsts = len(arrays["first_rows"])
    if len(arrays["first_ids"]) != firsts or (firsts and len(arrays["first_frames"]) != firsts):
      raise ValueError(f"first_*.npy in {directory} disagree on the number of episode starts")
    if int(arrays["added"]) < used:
      raise ValueError(f"added.npy says {int(arrays['added'])} steps, frames.npy holds {used}")

    with self._lock:
      self._added = int(arrays["added"])
      self._frames[:, :used] = arrays["frames"]
      self._age[:, :used] = arrays["age"]
      for k, array in enumerate(self._other):
        array[:, :used] = arrays[f"field_{k}"]
      self._first_frames = [{} for _ in range(self._rows)]
      first = zip(arrays["first_rows"], arrays["first_ids"], arrays["first_frames"], strict=False)
      for row, i, frames in first:
        self._first_frames[int(row)][int(i)] = np.array(frames)


def _save_npy(path: Path, array) -> None:
  """`np.save`'s file, written through `file.write` rather than numpy's `tofile`: a full disk
  raises OSError(ENOSPC) (`tofile` loses the errno: "N requested and M written"), and a ring
  slice of several rows goes out in 16 MiB chunks (`tofile` writes it element by element)."""
  array = np.asanyarray(array)
  with open(path, "wb") as f:
    if array.flags.c_contiguous:
      np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
      f.write(array.data)
    else:
      np.lib.format.write_array(_Writes(f), array, allow_pickle=False)


class _Writes:
  """A file seen only through `write`, so that numpy writes chunks to it."""

  def __init__(self, file):
    self.write = file.write


class DatasetOnlyReplay(replay_buffer.ReplayBuffer):
  """A TF-Agents `ReplayBuffer` read only through `as_dataset` and never cleared (off-policy
  replays whose samples are built outside TF variables): TF-Agents' other read paths name
  the class and refuse."""

  def _get_next(self, sample_batch_size=None, num_steps=None, time_stacked=True):
    raise NotImplementedError(f"{type(self).__name__} is read through as_dataset")

  def _single_deterministic_pass_dataset(self, *args, **kwargs):
    raise NotImplementedError(f"{type(self).__name__} is read through as_dataset")

  def _gather_all(self):
    raise NotImplementedError(f"{type(self).__name__} is read through as_dataset")

  def _clear(self):
    raise NotImplementedError(f"{type(self).__name__} is never cleared (off-policy replay)")


class FrameStackReplay(DatasetOnlyReplay):
  """A TF-Agents `ReplayBuffer` over a `FrameStore`: uniform samples, frames stored once.

  Adds run inside the compiled collect graph through `tf.numpy_function`; samples come out
  of a `tf.data` pipeline. Checkpointed to files (`save_to`/`restore_from`) beside the TF
  checkpoint rather than as TF variables (1M Atari frames are 7 GB).
  """

  def __init__(self, data_spec, num_envs: int, capacity: int, seed: int | None = None):
    super().__init__(data_spec, capacity)
    self._store = FrameStore(data_spec, num_envs, capacity, seed)
    self._other_specs = tf.nest.flatten(data_spec._replace(observation=()))

  @property
  def store(self) -> FrameStore:
    return self._store

  def end_stored_episodes(self) -> None:
    self._store.end_stored_episodes()

  def save_to(self, directory: Path) -> None:
    self._store.save_to(Path(directory))

  def restore_from(self, directory: Path) -> None:
    self._store.restore_from(Path(directory))

  def _num_frames(self):
    return tf.numpy_function(lambda: np.int64(self._store.num_frames), [], tf.int64, stateful=True)

  def _add_batch(self, items):
    others = tf.nest.flatten(items._replace(observation=()))

    def add(observation, step_type, *others):
      self._store.add(observation, step_type, list(others))
      return np.int64(self._store.num_frames)

    return tf.numpy_function(add, [items.observation, items.step_type, *others], tf.int64, stateful=True)

  def _as_dataset(self, sample_batch_size=None, num_steps=None, sequence_preprocess_fn=None,
                  num_parallel_calls=None):  # fmt: skip
    if sample_batch_size is None or num_steps is None:
      raise ValueError("FrameStackReplay samples batches of runs: give sample_batch_size and num_steps")
    obs_spec = self._data_spec.observation
    outer = [sample_batch_size, num_steps]

    def sample(_):
      stacks, others, ids = self._store.sample(sample_batch_size, num_steps)
      return (stacks, *others, ids)

    def to_trajectory(*arrays):
      stacks, *others, ids = arrays
      stacks.set_shape(outer + obs_spec.shape.as_list())
      for tensor, spec in zip(others, self._other_specs, strict=True):
        tensor.set_shape(outer + spec.shape.as_list())
      rest = tf.nest.pack_sequence_as(self._data_spec._replace(observation=()), others)
      ids.set_shape(outer)
      return rest._replace(observation=stacks), ids  # ids: (row-local) step numbers sampled

    dtypes = [obs_spec.dtype, *(s.dtype for s in self._other_specs), tf.int64]
    sampled = (
      tf.data.Dataset.range(1).repeat().map(lambda i: tf.numpy_function(sample, [i], dtypes, stateful=True))
    )
    return sampled.map(to_trajectory)


@gin.configurable
def frame_stack_replay(
  data_spec, num_envs: int, capacity: int = 1_000_000, seed: int | None = None
) -> FrameStackReplay:
  """Replay of `capacity` transitions (agent steps, summed over copies), each frame stored once.

  For stacked-frame observations (Atari): 1M 84x84 steps take 7.1 GB instead of 28 GB.
  seed: of the sampler; None follows the experiment's seed (`build_components.seed`).
  """
  return FrameStackReplay(data_spec, num_envs, capacity, seed)
