"""Frames stored once in Reverb: every item equals the in-process frame store's transition.

    PYTHONPATH=. .venv/bin/python -m pytest -q tests/replay/test_reverb_frames.py

Two environment copies emit 4-frame stacks of 6x6 frames in episodes of varied lengths that
start three ways: after a game reset (older frames zero), after a life loss with the lost
life's frames still stacked (ale-py's vector env) and with older frames seen nowhere else.
The same steps go to a `FrameStore` and, through `FrameWriter`, to a Reverb queue; each item
read back through `ReverbFrameReplay` (the learner's dataset) must equal the stacks the
environment emitted and the frame store's run at the same (copy, step).
"""

from __future__ import annotations

import numpy as np
import pytest
import reverb
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipelines.replay import replay
from pipelines.replay import reverb_replay as rr

FIRST, MID, LAST = ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST
STACK, SIDE, COPIES, STEPS = 4, 6, 2, 60
# (episode length in actions, how it starts); each copy cycles through its own list.
EPISODES = [
  [(5, "game"), (1, "life"), (3, "life_kept"), (2, "life_kept"), (7, "game"), (4, "life")],
  [(2, "life"), (6, "life_kept"), (1, "game"), (3, "game"), (8, "life_kept"), (1, "life_kept")],
]

SPEC = trajectory.Trajectory(
  step_type=tensor_spec.TensorSpec((), tf.int32),
  observation=tensor_spec.BoundedTensorSpec((STACK, SIDE, SIDE), tf.uint8, 0, 255),
  action=tensor_spec.BoundedTensorSpec((), tf.int64, 0, 10**6),
  policy_info=(),
  next_step_type=tensor_spec.TensorSpec((), tf.int32),
  reward=tensor_spec.TensorSpec((), tf.float32),
  discount=tensor_spec.TensorSpec((), tf.float32),
)


def _copy_steps(copy: int, rng: np.random.Generator) -> list[trajectory.Trajectory]:
  """STEPS trajectory steps of one copy, as a TF-Agents driver records them: an episode of
  n actions is n steps (FIRST, MID..., the last one's next step LAST) and the step between
  episodes (LAST, next FIRST). Every new frame is distinct and nonzero; `action` is
  copy * 1000 + step, the key of a step."""
  steps: list[trajectory.Trajectory] = []
  stack = np.zeros((STACK, SIDE, SIDE), np.uint8)

  def frame():
    return rng.integers(1, 256, (SIDE, SIDE), dtype=np.uint8)

  episode = 0
  while len(steps) < STEPS:
    length, start = EPISODES[copy][episode % len(EPISODES[copy])]
    episode += 1
    if start == "game":  # a reset zeroes the stack
      older = np.zeros((STACK - 1, SIDE, SIDE), np.uint8)
    elif start == "life":  # older frames the replay has not seen before
      older = np.stack([frame() for _ in range(STACK - 1)])
    else:  # "life_kept": the lost life's newest frames stay in the stack
      older = stack[1:]
    stack = np.concatenate([older, frame()[None]])
    for t in range(length + 1):
      step_type = FIRST if t == 0 else (LAST if t == length else MID)
      next_step_type = FIRST if t == length else (LAST if t == length - 1 else MID)
      steps.append(
        trajectory.Trajectory(
          step_type=np.int32(step_type),
          observation=stack.copy(),
          action=np.int64(copy * 1000 + len(steps)),
          policy_info=(),
          next_step_type=np.int32(next_step_type),
          reward=np.float32(rng.normal()),
          discount=np.float32(0.0 if next_step_type == LAST and rng.random() < 0.5 else 1.0),
        )
      )
      if t < length:
        stack = np.concatenate([stack[1:], frame()[None]])
  return steps[:STEPS]


def _batched(steps_per_copy, t: int) -> trajectory.Trajectory:
  return tf.nest.map_structure(lambda *x: np.stack(x), *(steps[t] for steps in steps_per_copy))


def _read_all(address: str, num_steps: int) -> list[trajectory.Trajectory]:
  """Every item of the queue, through the learner's dataset (it ends when none is left)."""
  source = rr.ReverbFrameReplay(SPEC, address, num_steps, rate_limiter_timeout_ms=1_000)
  dataset = source.as_dataset(sample_batch_size=1, num_steps=num_steps)
  return [tf.nest.map_structure(lambda x: x.numpy()[0], item) for item, _ in dataset]


@pytest.mark.parametrize(("num_steps", "restore"), [(2, False), (3, False), (2, True)])
def test_every_item_equals_the_frame_store_transition(tmp_path, num_steps, restore):
  """Items of 2 and 3 steps, chunks of 4 frames (items span chunks), and once read back from
  a server restored from its checkpoint (the run's `replay_server/` after a restart)."""
  rng = np.random.default_rng(0)
  emitted = [_copy_steps(copy, rng) for copy in range(COPIES)]
  store = replay.FrameStore(SPEC, COPIES, capacity=COPIES * STEPS)
  table = rr.experience_table(rr.frame_signature(SPEC, num_steps), capacity=1_000, min_size=1, queue=True)
  server = reverb.Server([table])
  writer = rr.FrameWriter(server.localhost_client(), SPEC, COPIES, num_steps, chunk_length=4)
  for t in range(STEPS):
    batch = _batched(emitted, t)
    store.add(batch.observation, batch.step_type, tf.nest.flatten(batch._replace(observation=())))
    writer(batch)
  writer.close()
  if restore:
    saved = server.localhost_client().checkpoint()
    server.stop()
    table = rr.experience_table(rr.frame_signature(SPEC, num_steps), capacity=1_000, min_size=1, queue=True)
    server = rr.start_server([table], None, tmp_path / "live", fallback=saved)
  items = _read_all(f"localhost:{server.port}", num_steps)
  server.stop()

  # One item per run of num_steps consecutive steps of a copy, across episode ends too.
  keys = sorted((int(item.action[0]) // 1000, int(item.action[0]) % 1000) for item in items)
  assert keys == [(copy, t) for copy in range(COPIES) for t in range(STEPS - num_steps + 1)]
  for item in items:
    copy, t = int(item.action[0]) // 1000, int(item.action[0]) % 1000
    truth = [emitted[copy][t + k] for k in range(num_steps)]
    np.testing.assert_array_equal(item.observation, np.stack([s.observation for s in truth]))
    stacks, others, _ = store.gather(np.array([copy]), np.array([t]), num_steps)
    np.testing.assert_array_equal(item.observation, stacks[0])
    fields = tf.nest.flatten(item._replace(observation=()))
    for field, expected in zip(fields, others, strict=True):
      np.testing.assert_array_equal(field, expected[0])
  # The three kinds of episode start were all sampled as an item's first step.
  starts = {(copy, t) for copy in range(COPIES) for t in range(STEPS) if emitted[copy][t].step_type == FIRST}
  assert len(starts & set(keys)) >= 12


def test_dataset_batches_rebuild_stacks_in_step_order():
  """A batch of the learner's dataset is [batch, steps, stack, *frame] with the newest frame
  of step k + 1 one step after step k's (uniform table, sampled at random)."""
  rng = np.random.default_rng(1)
  emitted = [_copy_steps(copy, rng) for copy in range(COPIES)]
  server = reverb.Server([rr.experience_table(rr.frame_signature(SPEC, 2), capacity=1_000, min_size=1)])
  writer = rr.FrameWriter(server.localhost_client(), SPEC, COPIES, 2)
  for t in range(STEPS):
    writer(_batched(emitted, t))
  writer.close()
  source = rr.ReverbFrameReplay(SPEC, f"localhost:{server.port}", 2)
  experience, _ = next(iter(replay.make_dataset(source, batch_size=64, num_steps=2, prefetch=2)))
  server.stop()
  assert experience.observation.shape == (64, 2, STACK, SIDE, SIDE)
  assert experience.step_type.shape == experience.reward.shape == (64, 2)
  for observation, action in zip(experience.observation.numpy(), experience.action.numpy(), strict=True):
    copy, t = divmod(int(action[0]), 1000)
    np.testing.assert_array_equal(observation[0], emitted[copy][t].observation)
    np.testing.assert_array_equal(observation[1], emitted[copy][t + 1].observation)
