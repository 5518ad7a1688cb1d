"""Distributed collection around a Reverb server: the server, actor, learner and evaluator.

    pipelines-launch --gin_file=gin/dqn_cartpole.gin --root_dir=runs/dist --num_actors=4

Each role is one process built from the same gin files as a single-process run
(`experiment.build_components`), so every binding means the same thing everywhere:

  server     a Reverb server with the experience, variables and reports tables
             (pipelines/replay/reverb_replay.py), checkpointed to `<root_dir>/replay_server/`;
  actor      a TF-Agents `train.Actor` stepping its own environment copies with the
             collect policy, writing trajectory windows to the experience table (frames
             stored once where the replay is a frame-stack replay), pulling the latest
             weights after every `steps_per_run` env steps;
  learner    the usual `run_experiment` loop (evaluation, checkpoints, policy exports,
             metrics) with `ReverbLearner` as its trainer: it samples from the
             experience table, trains, pushes weights and counts the actors' env steps;
  eval       follows the learner's policy exports, evaluates each one, appends the
             results to `<root_dir>/eval_exports.jsonl`.

What the roles agree on (window length, table kind and layout, rate limit) is derived from the
single-process settings by `plan_from_gin`: a replay agent's gradient steps per env step
become Reverb's samples-per-insert rate limit, so actors and learner keep the ratio the
gin file asks for however fast each of them runs.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import gin
import numpy as np
import tensorflow as tf
from tf_agents.experimental.distributed import reverb_variable_container
from tf_agents.metrics import tf_metrics
from tf_agents.policies import py_tf_eager_policy
from tf_agents.train import actor as tfa_actor

from pipelines import cli, signals
from pipelines.errors import PipelineError
from pipelines.replay import replay
from pipelines.replay import reverb_replay as rr
from pipelines.storage import checkpoints
from pipelines.storage import run_folder as rf
from pipelines.training import experiment, learning, recorder


def plan_from_gin() -> rr.ReplayPlan:
  """What server, actors and learner share, as the experiment's trainer class says it
  (`trainer.replay_plan()`, from its own gin settings): a subclass or a `functools.partial`
  of a trainer works distributed as the trainer does."""
  trainer = learning.configured(experiment.build_components, "trainer_fn")
  trainer = getattr(trainer, "func", trainer)
  planner = getattr(trainer, "replay_plan", None)
  if planner is None:
    name = getattr(trainer, "__name__", str(trainer))
    raise PipelineError(
      f"distributed runs need a trainer with a replay_plan() (OffPolicyTrainer, OnPolicyTrainer), not {name}"
    )
  return planner()


def variables_nest(agent, train_step: tf.Variable, env_steps: tf.Variable) -> dict:
  """What the learner pushes and actors pull: policy weights and the two step counters."""
  return {
    reverb_variable_container.POLICY_KEY: agent.collect_policy.variables(),
    reverb_variable_container.TRAIN_STEP_KEY: train_step,
    "env_steps": env_steps,
  }


def _no_trainer(agent, tf_env, observers):
  return None


def _components(seed_offset: int = 0) -> experiment.Components:
  seed = learning.configured(experiment.build_components, "seed") + seed_offset
  return experiment.build_components(trainer_fn=_no_trainer, seed=seed)


# ---------------------------------------------------------------- server


def run_server(root_dir: str, port: int) -> int:
  """Serves the tables until SIGINT/SIGTERM, then checkpoints them and stops."""
  parts = _components()
  plan = plan_from_gin()
  env_steps = parts.metrics.env_steps.environment_steps
  tables = plan.tables(
    parts.agent.collect_data_spec, variables_nest(parts.agent, parts.train_step, env_steps)
  )
  directory = rf.RunFolder(root_dir).path(rf.REPLAY_SERVER)
  started = time.monotonic()
  server = rr.start_server(tables, port, directory)
  client = server.localhost_client()
  items = lambda: client.server_info()[rr.EXPERIENCE].current_size  # noqa: E731
  # What a restart recovered, and how long loading took (the fault benchmark reads this line).
  loaded = items()
  with signals.StopSignals() as stop:
    print(rr.SECURITY_NOTE.format(port=port), flush=True)
    print(
      f"server: replay server listening on port {port} with {loaded} experience items "
      f"(started in {time.monotonic() - started:.2f} s), checkpoints in {directory}",
      flush=True,
    )
    while stop.received is None:
      time.sleep(0.5)
    before, started = items(), time.monotonic()
    path = client.checkpoint()
    after = items()
    # Actors insert while it is written: the checkpoint holds between `before` and `after` items.
    print(
      f"server: stopping; checkpoint {path} written in {time.monotonic() - started:.1f} s "
      f"with {before} to {after} experience items",
      flush=True,
    )
    server.stop()
    return 0


# ---------------------------------------------------------------- actor


class _Tally:
  """Observer counting env steps and summing each copy's rewards into episode returns."""

  def __init__(self, num_envs: int):
    self._sums = np.zeros(num_envs)
    self.finished: list[float] = []
    self.steps = 0

  def __call__(self, trajectory) -> None:
    self.steps += int(np.sum(~trajectory.is_boundary()))
    self._sums += np.where(trajectory.is_boundary(), 0.0, trajectory.reward)
    ended = trajectory.is_last()
    self.finished.extend(self._sums[ended].tolist())
    self._sums[ended] = 0.0


def _wait_for_variables(client, who: str, timeout: float) -> None:
  deadline = time.monotonic() + timeout
  waiting = signals.WaitingLine(f"{who}: waiting for the learner's first weights")
  while client.server_info()[rr.VARIABLES].current_size == 0:
    if time.monotonic() > deadline:
      raise PipelineError(f"{who}: no weights from a learner after {timeout:.0f} s")
    waiting.tick()
    time.sleep(0.5)


# The role's flags arrive as arguments; gin binds only its tuning knobs (one channel each).
@gin.configurable(denylist=["address", "actor_id", "wait_timeout"])
def run_actor(address: str, actor_id: int, wait_timeout: float, steps_per_run: int = 64) -> int:
  """Collects until SIGINT/SIGTERM. Actor k's copies are seeded from `seed + 1000 (k + 1)`
  (`environments.copy_seeds`).

  steps_per_run: env steps (summed over this actor's copies) between weight pulls and
    reports to the learner.
  """
  who = f"actor {actor_id}"
  parts = _components(seed_offset=1_000 * (actor_id + 1))
  plan = plan_from_gin()
  client = rr.wait_for_server(address, wait_timeout, who)
  env_steps = parts.metrics.env_steps.environment_steps
  variables = variables_nest(parts.agent, parts.train_step, env_steps)
  container = reverb_variable_container.ReverbVariableContainer(address, table_names=[rr.VARIABLES])
  _wait_for_variables(client, who, wait_timeout)
  container.update(variables)
  env = parts.collect_env
  num_envs = env.batch_size or 1
  writer = plan.writer(client, parts.agent.collect_data_spec, num_envs)
  tally = _Tally(num_envs)
  policy = py_tf_eager_policy.PyTFEagerPolicy(
    parts.agent.collect_policy, use_tf_function=True, batch_time_steps=False
  )
  actor = tfa_actor.Actor(
    env, policy, parts.train_step, steps_per_run=steps_per_run, observers=[writer, tally], metrics=[]
  )
  print(
    f"{who}: collecting with {num_envs} environment copies from train step {int(parts.train_step)}",
    flush=True,
  )
  with signals.StopSignals() as stop:
    taken, last_print = 0, time.monotonic()
    while stop.received is None:
      actor.run()
      # The rate limiter holds actors back while the learner lags (or is down).
      while not writer.flush(timeout_ms=1_000) and stop.received is None:
        pass
      steps, tally.steps = tally.steps, 0
      games = env.pop_game_returns()
      episodes, tally.finished = tally.finished, []
      report = {
        "actor_id": np.int64(actor_id),
        "env_steps": np.int64(steps),
        "episodes": np.int64(len(episodes)),
        "episode_return_sum": np.float64(sum(episodes)),
        "games": np.int64(len(games)),
        "game_return_sum": np.float64(sum(games)),
      }
      client.insert(report, {rr.REPORTS: 1.0})
      container.update(variables)
      if not taken:  # the moment a restarted actor has rejoined (the fault benchmark reads it)
        print(f"{who}: first report to the learner, {steps} env steps", flush=True)
      taken += steps
      if time.monotonic() - last_print > 10:
        print(f"{who}: {taken} env steps; learner at train step {int(parts.train_step)}", flush=True)
        last_print = time.monotonic()
    print(f"{who}: stopped after {taken} env steps", flush=True)
    return 0


# ---------------------------------------------------------------- learner


_SAMPLE_TIMEOUT_S = 2.0  # a learner without samples this long returns to Python


class ReverbLearner:
  """The trainer of a learner process: samples the experience table, trains, pushes the
  weights, and counts the env steps actors report. Same interface as the in-process
  trainers, so `run_experiment` drives it unchanged (evaluation, checkpoints, exports)."""

  def __init__(
    self,
    agent,
    tf_env,
    observers,
    plan: rr.ReplayPlan,
    address: str,
    wait_timeout: float,
    push_period: int = 32,
  ):
    self._agent = agent
    self._push_period = push_period
    self._plan = plan
    self._address = address
    self._wait_timeout = wait_timeout
    self.env_steps_per_iteration = plan.env_steps_per_iteration
    self._env_steps = next(o for o in observers if isinstance(o, tf_metrics.EnvironmentSteps))
    self._variables = variables_nest(agent, agent.train_step_counter, self._env_steps.environment_steps)
    self._games: list[float] = []
    self._last_loss = 0.0
    waiting = f"learner: waiting for experience from actors (replay at {address})"
    self._waiting = signals.WaitingLine(waiting, every=10)
    self._client = None
    self._starved_since: float | None = time.monotonic()  # until the first gradient steps
    self._update = tf.function(agent.train, jit_compile=plan.jit_compile, autograph=False)
    self._train = tf.function(self._train_steps, autograph=False)

  def checkpoint_items(self) -> dict:
    return {"replay_server": self}  # save_to / restore_from below

  def save_to(self, directory: Path) -> None:
    """A learner checkpoint asks the server to checkpoint its tables too (on its own disk)."""
    Path(directory).mkdir(parents=True)
    path = None
    try:
      if self._client is not None:
        self._client.server_info(timeout=5)  # checkpoint() has no timeout: not on a dead server
        path = self._client.checkpoint()
    except Exception as e:  # noqa: BLE001  (the server may be down; the learner goes on)
      print(f"learner: replay server checkpoint failed: {cli.first_line(e)}", flush=True)
    (Path(directory) / "server_checkpoint.txt").write_text(f"{path}\n")

  def restore_from(self, directory: Path) -> None:
    pass  # the server restores its own latest checkpoint when it starts

  def initialize(self) -> None:
    self._client = rr.wait_for_server(self._address, self._wait_timeout, "learner")
    # 2 s without samples: back to Python (signals, "waiting" lines) when starved.
    buffer = self._plan.replay(
      self._agent.collect_data_spec, self._address, rate_limiter_timeout_ms=int(1_000 * _SAMPLE_TIMEOUT_S)
    )
    if self._plan.on_policy:
      self._dataset = buffer.as_dataset(
        sample_batch_size=self._plan.batch_size, num_steps=self._plan.sequence_length
      )
    else:
      self._dataset = replay.make_dataset(buffer)
    self._iterator = iter(self._dataset)
    self._container = reverb_variable_container.ReverbVariableContainer(
      self._address, table_names=[rr.VARIABLES]
    )
    self._container.push(self._variables)
    print(
      f"learner: connected to {self._address}; weights pushed at train step "
      f"{int(self._agent.train_step_counter)}, {int(self._env_steps.environment_steps)} env steps",
      flush=True,
    )

  def _train_steps(self, iterator, steps):
    def body(i, loss):
      experience, _ = next(iterator)
      if self._plan.on_policy:
        return i + 1, self._agent.train(self._agent.preprocess_sequence(experience)).loss
      return i + 1, self._update(experience).loss

    return tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), tf.constant(0.0)))[1]

  def run(self, iterations: int) -> float:
    """Trains `iterations` x train_steps_per_iteration gradient steps, pushing the weights
    every `push_period` of them (on-policy: after every update)."""
    remaining = iterations * self._plan.train_steps_per_iteration
    period = 1 if self._plan.on_policy else max(1, self._push_period)
    while remaining > 0:
      steps = min(period, remaining)
      remaining -= steps
      try:
        self._last_loss = float(self._train(self._iterator, tf.constant(steps)))
      except tf.errors.OutOfRangeError:  # nothing to sample for 2 s: actors absent or slow
        self._iterator = iter(self._dataset)
        self._waiting.tick()
        if self._starved_since is None:
          self._starved_since = time.monotonic() - _SAMPLE_TIMEOUT_S
        break
      if self._starved_since is not None:  # after a start or a gap: when training (re)started
        print(
          f"learner: gradient steps at train step {int(self._agent.train_step_counter)} "
          f"after {time.monotonic() - self._starved_since:.1f} s without",
          flush=True,
        )
        self._starved_since = None
      self._container.push(self._variables)
    self._drain_reports()
    return self._last_loss

  def _drain_reports(self) -> None:
    try:
      reports = rr.drain_reports(self._client)
    except Exception as e:  # noqa: BLE001  (grpc: unavailable, deadline exceeded)
      # Exit 1, not a user error: a supervisor restarts the learner, which waits for the server.
      print(
        f"learner: lost the replay server at {self._address} ({cli.first_line(e)})",
        file=sys.stderr,
        flush=True,
      )
      raise SystemExit(1) from None
    for report in reports:
      # Whole-game scores where the environment reports games (Atari), else episode returns;
      # one mean per report, repeated once per game so that means over the list weigh it.
      count, total = (
        (report["games"], report["game_return_sum"])
        if report["games"]
        else (report["episodes"], report["episode_return_sum"])
      )
      if count:
        self._games += [total / count] * count
    self._env_steps.environment_steps.assign_add(sum(report["env_steps"] for report in reports))

  def pop_game_returns(self) -> list[float]:
    """Returns of the actors' finished games (episodes where games are not reported)."""
    games, self._games = self._games, []
    return games


@gin.configurable(denylist=["root_dir", "address", "wait_timeout"])
def run_learner(root_dir: str, address: str, wait_timeout: float, push_period: int = 32) -> int:
  """The learner: `run_experiment` with a `ReverbLearner` trainer.

  push_period: gradient steps between weight pushes of a replay agent (the in-process
    loop's policy changes every `train_steps_per_iteration`); on-policy agents push after
    every update.
  """
  plan = plan_from_gin()
  trainer = functools.partial(
    ReverbLearner, plan=plan, address=address, wait_timeout=wait_timeout, push_period=push_period
  )
  final = experiment.run_experiment(
    root_dir, build_fn=functools.partial(experiment.build_components, trainer_fn=trainer)
  )
  print("learner: final evaluation: " + json.dumps(final), flush=True)
  return 0


# ---------------------------------------------------------------- evaluator


@gin.configurable(denylist=["root_dir"])
def run_evaluator(root_dir: str, poll_seconds: float = 2.0) -> int:
  """Evaluates every new policy export of the run (Evaluator's gin settings)."""
  folder = rf.RunFolder(root_dir)
  parts = _components(seed_offset=20_000)
  evaluator = parts.evaluator  # the experiment seed's epsilon draws
  frames_per_env_step = learning.configured(experiment.run_experiment, "frames_per_env_step")
  with signals.StopSignals() as stop:
    seen = None
    waiting = signals.WaitingLine(f"eval: waiting for the first policy export in {folder.path(rf.POLICY)}")
    while stop.received is None:
      marker = folder.path(rf.POLICY) / "saved_model.pb"
      try:
        stamp = marker.stat().st_mtime_ns
      except FileNotFoundError:
        stamp = None
      if stamp is None or stamp == seen:
        if stamp is None:
          waiting.tick()
        time.sleep(poll_seconds)
        continue
      seen = stamp
      try:
        policy = checkpoints.load_saved_policy(folder.path(rf.POLICY))
      except (OSError, ValueError):  # caught mid-swap: try again at the next poll
        seen = None
        continue
      env_steps, train_steps = checkpoints.exported_env_steps(policy), int(policy.get_train_step())
      result = evaluator(parts.eval_tf_env, policy)
      # The leading fields of metrics.jsonl (an export from before exports carried their env
      # steps has train steps only); `time`: this role has no run clock of its own.
      if env_steps is None:
        fields = {"train_steps": train_steps}
      else:
        fields = recorder.clock_fields(env_steps, train_steps, frames_per_env_step)
      record = {**fields, "time": round(time.time(), 3), **result.summary()}
      folder.append_metrics(record, rf.EVAL_EXPORTS)
      where = f"{env_steps:,} env steps, " if env_steps is not None else ""
      print(
        f"eval: {where}train step {train_steps}: average return {record['average_return']:.1f} "
        f"over {record['num_episodes']} episodes",
        flush=True,
      )
    return 0
