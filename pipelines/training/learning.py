"""Learning: trainers that alternate collection and agent updates inside compiled graphs.

    pipelines-train --gin_file=gin/dqn_cartpole.gin \
        --gin_bindings='OffPolicyTrainer.train_steps_per_iteration = 2' --root_dir=runs/x

A trainer owns its driver and its replay and exposes the same small interface to the
experiment loop (`Trainer` below), so that off-policy (replay) and on-policy (collect,
train, clear) agents, and the distributed learner, share one loop:

  trainer.initialize()        # e.g. the random initial collect, skipped on resume
  loss = trainer.run(n)       # n iterations of collect + train, one graph call
  trainer.env_steps_per_iteration
  trainer.checkpoint_items()  # extra state to checkpoint (the off-policy replay buffer)

Python-level calls into TensorFlow cost ~0.4 ms each on this 2-core machine, so a call
runs many iterations: the per-step work never returns to Python.

Exact budgets with batched copies: one iteration is a fixed number of *batched* env steps
(`collect / copies` calls of `env.step`). TF-Agents' `DynamicStepDriver` alone counts only
steps whose action acts, not the step that restarts a copy after LAST, and keeps stepping
until it has counted its budget, so an iteration took up to 2N-1 extra steps with N
copies: fewer gradient steps per env step than configured, and an on-policy buffer that
overwrote its oldest steps. Here the off-policy trainer owes `train / collect` gradient
steps per env step actually taken (restart steps excluded, as SB3 and the metrics count
them) and pays them every iteration; an on-policy batch is exactly `collect / copies`
steps per copy, none overwritten.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import gin
import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.environments import tf_environment
from tf_agents.policies import random_tf_policy
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipelines.errors import PipelineError
from pipelines.replay import replay
from pipelines.replay import reverb_replay as rr
from pipelines.training import collection


def configured(fn, name: str):
  """The value the parsed gin config binds to `fn.name` (a configurable reference as the
  function or class it names, a macro as its value), else `fn`'s default."""
  configurable = getattr(fn, "__name__", str(fn))
  try:
    value = gin.query_parameter(f"{configurable}.{name}")
  except ValueError:
    return inspect.signature(fn).parameters[name].default
  # `X.y = %macro` (gin/agents/dqn_atari.gin's `%replay_fn`) is a reference to gin's `macro`
  # function scoped by the macro's name; its value is bound as `<name>/gin.macro.value`.
  reference = gin.config.ConfigurableReference
  while isinstance(value, reference) and value.configurable.wrapped is gin.config.macro:
    value = gin.query_parameter(f"{'/'.join(value.scopes)}/gin.macro.value")
  return value.configurable.wrapped if isinstance(value, reference) else value


def _collect_envs() -> int:
  for selector in ("collect/make_environment.num_envs", "make_environment.num_envs"):
    try:
      return int(gin.query_parameter(selector))
    except ValueError:
      continue
  return 1


class Trainer(Protocol):
  """What the experiment loop needs from a trainer (`OffPolicyTrainer`, `OnPolicyTrainer`,
  `distributed.ReverbLearner`); a subclass or a wrapper with these members works too."""

  env_steps_per_iteration: int  # env steps, summed over copies, that one iteration stands for

  def initialize(self) -> None: ...

  def run(self, iterations: int) -> float:
    """Runs `iterations` iterations of collect + train; returns the last loss."""
    ...

  def checkpoint_items(self) -> dict[str, Any]:
    """Extra state a checkpoint holds (trackables, or items saved beside it)."""
    ...


@runtime_checkable
class GameScores(Protocol):
  """A source of whole-game scores (an environment, or the distributed learner's actors)."""

  def pop_game_returns(self) -> list[float]: ...


class _GraphLoop:
  """What both trainers share: `run(n)` executes n calls of `_iteration` inside one
  `tf.while_loop`, one graph call, keeping the environment's time step between calls."""

  def _init_loop(self, agent: tf_agent.TFAgent, tf_env: tf_environment.TFEnvironment) -> None:
    self._agent = agent
    self._env = tf_env
    # autograph=False: converting TF-Agents' drivers (and PPO's train) costs seconds of tracing.
    self._run = tf.function(self._run_iterations, autograph=False)
    self._time_step = None
    self._policy_state = agent.collect_policy.get_initial_state(tf_env.batch_size or 1)

  def _iteration(self, time_step, policy_state):
    """One collect + train step: returns (time_step, policy_state, loss)."""
    raise NotImplementedError

  def _run_iterations(self, time_step, policy_state, iterations):
    def body(i, time_step, policy_state, loss):
      return (i + 1, *self._iteration(time_step, policy_state))

    _, time_step, policy_state, loss = tf.while_loop(
      lambda i, *_: i < iterations,
      body,
      (tf.constant(0), time_step, policy_state, tf.constant(0.0)),
    )
    return time_step, policy_state, loss

  def run(self, iterations: int) -> float:
    """Runs `iterations` of collect + train in one graph call; returns the last loss."""
    if self._time_step is None:
      self._time_step = self._env.reset()
    self._time_step, self._policy_state, loss = self._run(
      self._time_step, self._policy_state, tf.constant(iterations)
    )
    return float(loss)


@gin.configurable
class OffPolicyTrainer(_GraphLoop):
  """Collect into a replay buffer, train on uniform samples from it (DQN family).

  collect_steps_per_iteration: env steps per iteration, summed over the batched copies
    (a multiple of the number of copies).
  train_steps_per_iteration: gradient steps per iteration.
  initial_collect_steps: env steps taken with a uniform random policy before learning.
  jit_compile: compile the agent update with XLA (2-3x faster for small networks on CPU).
  """

  def __init__(
    self,
    agent: tf_agent.TFAgent,
    tf_env: tf_environment.TFEnvironment,
    observers: Sequence[Callable],
    replay_fn: Callable = replay.uniform_replay,
    dataset_fn: Callable = replay.make_dataset,
    initial_collect_steps: int = 1_000,
    collect_steps_per_iteration: int = 1,
    train_steps_per_iteration: int = 1,
    jit_compile: bool = True,
  ):
    num_envs = tf_env.batch_size or 1
    if collect_steps_per_iteration % num_envs:
      raise ValueError(
        f"collect_steps_per_iteration={collect_steps_per_iteration} must be a multiple of "
        f"the {num_envs} environment copies"
      )
    self.env_steps_per_iteration = collect_steps_per_iteration
    self._train_steps_per_iteration = train_steps_per_iteration
    self._batched_steps = collect_steps_per_iteration // num_envs
    self._initial_collect_steps = initial_collect_steps
    self._init_loop(agent, tf_env)
    self.replay = replay_fn(agent.collect_data_spec, num_envs)
    observers = [self.replay.add_batch, *observers]
    # Env steps taken by the collect policy, and gradient steps owed for them, in units of
    # 1 / collect_steps_per_iteration gradient steps (integers: the ratio stays exact).
    self.collected = tf.Variable(0, dtype=tf.int64, trainable=False, name="collected_env_steps")
    self._owed = tf.Variable(0, dtype=tf.int64, trainable=False, name="owed_train_units")
    self._driver = collection.step_driver(
      tf_env, agent.collect_policy, [*observers, self._count_steps], collect_steps_per_iteration
    )
    random_policy = random_tf_policy.RandomTFPolicy(tf_env.time_step_spec(), tf_env.action_spec())
    self._initial_driver = collection.step_driver(
      tf_env, random_policy, observers, max(initial_collect_steps, 1)
    )
    self._dataset = dataset_fn(self.replay)
    self._iterator = None
    self._update = tf.function(agent.train, jit_compile=jit_compile, autograph=False)

  @classmethod
  def replay_plan(cls) -> rr.ReplayPlan:
    """Distributed: items of `make_dataset.num_steps` steps at every step, the replay's
    capacity, and a samples-per-insert limit of `train x batch / collect`, this trainer's
    exact ratio of gradient steps to env steps. A frame-stack replay (Atari) becomes Reverb's
    frame-once layout: each frame stored once there too."""
    batch = configured(replay.make_dataset, "batch_size")
    collect = configured(cls, "collect_steps_per_iteration")
    train = configured(cls, "train_steps_per_iteration")
    replay_fn = configured(cls, "replay_fn")
    # The bound function is gin's undecorated one, the module's attribute its gin wrapper.
    frames_once = inspect.unwrap(replay_fn) is inspect.unwrap(replay.frame_stack_replay)
    return rr.ReplayPlan(
      on_policy=False,
      sequence_length=configured(replay.make_dataset, "num_steps"),
      stride=1,
      capacity=configured(replay_fn, "capacity"),
      min_size=max(configured(cls, "initial_collect_steps"), batch),
      samples_per_insert=train * batch / collect,
      batch_size=batch,
      train_steps_per_iteration=train,
      env_steps_per_iteration=collect,
      frames_once=frames_once,
      jit_compile=configured(cls, "jit_compile"),
    )

  def checkpoint_items(self) -> dict:
    return {"replay_buffer": self.replay}

  def initialize(self) -> None:
    """Fills the replay with random-policy steps unless it was restored non-empty; a
    restored replay's episodes are ended, since the environment restarts anew."""
    if int(self.replay.num_frames()) > 0:
      self.replay.end_stored_episodes()
    elif self._initial_collect_steps > 0:
      run = tf.function(self._initial_driver.run, autograph=False)
      self._time_step, _ = run(self._env.reset())
    self._iterator = iter(self._dataset)

  def _count_steps(self, traj: trajectory.Trajectory):
    return self.collected.assign_add(tf.reduce_sum(tf.cast(~traj.is_boundary(), tf.int64)))

  def _train_step(self) -> tf.Tensor:
    experience, _ = next(self._iterator)
    return self._update(experience).loss

  def _iteration(self, time_step, policy_state):
    before = self.collected.read_value()
    time_step, policy_state = self._driver.run(
      time_step, policy_state, maximum_iterations=self._batched_steps
    )
    owed = self._owed + (self.collected - before) * self._train_steps_per_iteration
    steps = owed // self.env_steps_per_iteration
    self._owed.assign(owed - steps * self.env_steps_per_iteration)

    def owed_steps():
      body = lambda k, _: (k + 1, self._train_step())  # noqa: E731
      _, loss = tf.while_loop(lambda k, _: k < steps, body, (tf.constant(0, tf.int64), tf.constant(0.0)))
      return loss

    def configured_steps():  # unrolled: ~10% faster per gradient step than the loop on CartPole
      loss = tf.constant(0.0)
      for _ in range(self._train_steps_per_iteration):
        loss = self._train_step()
      return loss

    # No copy restarted in this iteration (the usual case): exactly the configured steps.
    loss = tf.cond(tf.equal(steps, self._train_steps_per_iteration), configured_steps, owed_steps)
    return time_step, policy_state, loss


@gin.configurable
class OnPolicyTrainer(_GraphLoop):
  """Collect a batch with the current policy, train on all of it, discard it (PPO, A2C,
  REINFORCE), as TF-Agents teaches: a driver fills a `TFUniformReplayBuffer`, then
  `gather_all()` -> `agent.train` -> `clear()`.

  driver_fn: `collection.step_driver` (a fixed number of env steps: PPO, A2C) or
    `collection.episode_driver` (whole episodes: REINFORCE), called as
    `driver_fn(tf_env, policy, observers, collect_per_iteration)`.
  collect_per_iteration: env steps (step driver) or episodes (episode driver) per
    iteration, summed over the batched copies.
  steps_per_env: env steps the buffer holds per copy; None: collect_per_iteration /
    copies, what a step driver fills. An episode driver stops when the buffer is full
    (e.g. episodes per copy x the episode cap), so nothing is overwritten; an episode
    still running then is left out of the loss (REINFORCE masks steps after the last end).

  A step-driver batch is followed by one more step per copy, the time step the driver
  stopped at, so that the last collected step bootstraps from V(s_T) as in SB3 and
  OpenAI baselines; without it TF-Agents' PPO cannot use the batch's last step.
  """

  def __init__(
    self,
    agent: tf_agent.TFAgent,
    tf_env: tf_environment.TFEnvironment,
    observers: Sequence[Callable],
    driver_fn: Callable = collection.step_driver,
    collect_per_iteration: int = 2_048,
    steps_per_env: int | None = None,
  ):
    num_envs = tf_env.batch_size or 1
    by_episodes = driver_fn is collection.episode_driver
    if by_episodes and steps_per_env is None:
      raise ValueError("OnPolicyTrainer.steps_per_env must be set for an episode driver")
    if not by_episodes and collect_per_iteration % num_envs:
      raise ValueError(
        f"collect_per_iteration={collect_per_iteration} env steps must be a multiple of "
        f"the {num_envs} environment copies"
      )
    steps_per_env = steps_per_env or collect_per_iteration // num_envs
    self._batched_steps = steps_per_env
    self._bootstrap_step = not by_episodes
    # The loop only uses this to size its graph calls; for episodes it is an upper bound.
    self.env_steps_per_iteration = steps_per_env * num_envs if by_episodes else collect_per_iteration
    self._init_loop(agent, tf_env)
    self.replay = tf_uniform_replay_buffer.TFUniformReplayBuffer(
      agent.collect_data_spec, batch_size=num_envs, max_length=steps_per_env
    )
    self._driver = driver_fn(
      tf_env, agent.collect_policy, [self.replay.add_batch, *observers], collect_per_iteration
    )

  @classmethod
  def replay_plan(cls) -> rr.ReplayPlan:
    """Distributed: one copy's `steps_per_env` steps per item, in a queue of one batch
    (actors wait until the learner has read it)."""
    if configured(cls, "driver_fn").__name__ != "step_driver":
      raise PipelineError(
        "distributed collection runs agents trained on fixed-length batches (PPO, A2C); "
        "whole-episode batches (OnPolicyTrainer.driver_fn = @episode_driver) are not supported"
      )
    collect = configured(cls, "collect_per_iteration")
    length = configured(cls, "steps_per_env") or collect // _collect_envs()
    rows = collect // length
    return rr.ReplayPlan(
      on_policy=True,
      sequence_length=length,
      stride=length,
      capacity=rows,
      min_size=rows,
      samples_per_insert=None,
      batch_size=rows,
      train_steps_per_iteration=1,
      env_steps_per_iteration=collect,
    )

  def checkpoint_items(self) -> dict:
    return {}  # the buffer is empty between iterations; normalisers live in the agent

  def initialize(self) -> None:
    pass

  def _with_final_step(self, experience, time_step, policy_state):
    """Appends the step the driver stopped at (its observation, value and step type)."""
    action_step = self._agent.collect_policy.action(time_step, policy_state)
    final = trajectory.Trajectory(
      step_type=time_step.step_type,
      observation=time_step.observation,
      action=action_step.action,
      policy_info=action_step.info,
      next_step_type=tf.fill(tf.shape(time_step.step_type), ts.StepType.MID),
      reward=tf.zeros_like(time_step.reward),
      discount=tf.ones_like(time_step.discount),
    )
    return tf.nest.map_structure(lambda b, f: tf.concat([b, f[:, None]], axis=1), experience, final)

  def _iteration(self, time_step, policy_state):
    time_step, policy_state = self._driver.run(
      time_step, policy_state, maximum_iterations=self._batched_steps
    )
    experience = self.replay.gather_all()
    if self._bootstrap_step:
      experience = self._with_final_step(experience, time_step, policy_state)
    # preprocess_sequence: PPO's values, returns and advantages, once per batch.
    experience = self._agent.preprocess_sequence(experience)
    loss = self._agent.train(experience).loss
    with tf.control_dependencies([loss]):  # clear only after training read the batch
      cleared = self.replay.clear()
    with tf.control_dependencies([cleared]):
      return time_step, policy_state, tf.identity(loss)
