"""pipelines-launch: a Reverb server, actors, a learner and an evaluator on loopback.

Every process a test starts is killed (its whole process group) when the test ends,
passed or failed; the roles `--role=all` starts die with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.replay.addresses import free_port
from pipelines.storage import run_folder as rf

from conftest import REPO, cli_env

# DQN CartPole with more frequent checkpoints; the gin file's own learning settings.
DQN = "gin/dqn_cartpole.gin"
PPO = "gin/ppo_cartpole.gin"
SAC = "gin/sac_pendulum.gin"


class Process:
  """A `python -m pipelines.launch` process in its own session, logging to a file."""

  def __init__(self, args: list[str], log: Path):
    self.log = log
    self._file = open(log, "w")  # noqa: SIM115  (closed in stop)
    self.popen = subprocess.Popen(
      [sys.executable, "-m", "pipelines.launch", *args],
      cwd=REPO,
      env=cli_env(),
      stdout=self._file,
      stderr=subprocess.STDOUT,
      start_new_session=True,
    )

  def text(self) -> str:
    return self.log.read_text()

  def wait(self, timeout: float) -> int:
    return self.popen.wait(timeout)

  def stop(self) -> None:
    with contextlib.suppress(ProcessLookupError):
      os.killpg(self.popen.pid, signal.SIGKILL)
    self.popen.wait()
    self._file.close()
    # Roles of `--role=all` run in their own sessions and get SIGTERM when the supervisor
    # dies; one blocked on a dead server would outlive the test: kill them too.
    for roles in self.log.parent.glob("**/logs/roles.json"):
      for pid in json.loads(roles.read_text()).values():
        with contextlib.suppress(ProcessLookupError):
          os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def processes():
  started: list[Process] = []

  def start(args, log):
    process = Process(args, log)
    started.append(process)
    return process

  try:
    yield start
  finally:
    for process in started:
      process.stop()


def wait_for(condition, timeout: float, what: str, every: float = 1.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    value = condition()
    if value:
      return value
    time.sleep(every)
  raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run_launch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", "pipelines.launch", *args],
    cwd=REPO,
    env=cli_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith("pipelines-launch: error:")]


def only_line(result: subprocess.CompletedProcess) -> str:
  """Flag mistakes are caught before TensorFlow starts: stderr is the one error line."""
  (line,) = result.stderr.strip().splitlines()
  return line


def checkpoint_steps(root: Path) -> list[int]:
  return [int(p.name.split("-")[1].split(".")[0]) for p in (root / rf.CHECKPOINTS).glob("ckpt-*.index")]


def train_steps(root: Path) -> int:
  records = rf.RunFolder(root).read_metrics()
  return records[-1]["train_steps"] if records else 0


# ---------------------------------------------------------------- bad input


def test_unknown_role_bad_address_and_busy_port_are_one_line_errors(tmp_path):
  common = [f"--gin_file={DQN}", f"--root_dir={tmp_path / 'run'}"]
  unknown = run_launch(*common, "--role=referee")
  assert unknown.returncode == 2 and only_line(unknown) == (
    "pipelines-launch: error: unknown --role 'referee'; choose one of all, server, learner, actor, eval"
  ), unknown.stderr
  for address in ("nonsense", "localhost:notaport", "localhost:99999", "no-such-host.invalid:8008"):
    bad = run_launch(*common, "--role=actor", f"--replay_address={address}")
    assert bad.returncode == 2, bad.stderr
    assert only_line(bad).startswith("pipelines-launch: error: bad --replay_address"), bad.stderr
  with socket.socket(socket.AF_INET6) as busy:
    busy.bind(("::", 0))
    busy.listen()
    port = busy.getsockname()[1]
    for role in ("server", "all"):
      taken = run_launch(*common, f"--role={role}", f"--port={port}")
      assert taken.returncode == 2 and only_line(taken) == (
        f"pipelines-launch: error: port {port} is in use; pick another with --port"
      ), taken.stderr
  assert not (tmp_path / "run").exists()  # nothing written for refused input


def test_a_role_waits_for_the_server_then_fails_clearly(tmp_path):
  address = f"localhost:{free_port()}"
  result = run_launch(
    f"--gin_file={DQN}",
    f"--root_dir={tmp_path / 'run'}",
    "--role=actor",
    f"--replay_address={address}",
    "--wait_timeout=5",
  )
  assert result.returncode == 2, result.stderr
  assert f"actor 0: waiting for replay server at {address}" in result.stdout
  assert error_lines(result.stderr) == [
    f"pipelines-launch: error: actor 0: no replay server at {address} after 5 s"
  ]


# ---------------------------------------------------------------- roles in any order, learner restart

TOY = [
  "run_experiment.num_env_steps = 2_000",
  "run_experiment.eval_interval = 500",
  "run_experiment.checkpoint_interval = 500",
  "run_experiment.target_return = None",
  "Evaluator.num_episodes = 2",
  "eval/make_environment.num_envs = 2",
]


def test_roles_start_in_any_order_and_a_killed_learner_resumes(tmp_path):
  root, port = tmp_path / "run", free_port()
  address = f"localhost:{port}"
  common = [f"--gin_file={DQN}", *(f"--gin_bindings={b}" for b in TOY), f"--root_dir={root}"]
  logs = tmp_path
  with processes() as start:
    # Reverse order: the learner and the actor wait for the server, which comes last.
    learner = start([*common, "--role=learner", f"--replay_address={address}"], logs / "learner.log")
    actor = start([*common, "--role=actor", f"--replay_address={address}"], logs / "actor.log")
    wait_for(lambda: "waiting for replay server" in learner.text(), 120, "the learner to wait")
    wait_for(lambda: "waiting for replay server" in actor.text(), 120, "the actor to wait")
    server = start([*common, "--role=server", f"--port={port}"], logs / "server.log")
    # Learning goes on: evaluations with growing train steps, then a checkpoint.
    wait_for(
      lambda: train_steps(root) > 0 and list((root / rf.CHECKPOINTS).glob("ckpt-*.index")), 300, "training"
    )
    learner.stop()  # SIGKILL: no chance to save
    killed_at = train_steps(root)
    checkpoint = max(
      int(p.name.split("-")[1].split(".")[0]) for p in (root / rf.CHECKPOINTS).glob("ckpt-*.index")
    )
    actor_lines = actor.text().count("\n")
    relaunched = start([*common, "--role=learner", f"--replay_address={address}"], logs / "learner2.log")
    wait_for(
      lambda: f"Resuming {root} at {checkpoint} env steps" in relaunched.text(), 180, "the resume line"
    )
    # It says what it resumed from and when it trains again (the fault benchmark's markers).
    pushed = rf"weights pushed at train step \d+, {checkpoint} env steps"
    wait_for(lambda: re.search(pushed, relaunched.text()), 120, "the resumed counters")
    wait_for(lambda: "learner: gradient steps at train step" in relaunched.text(), 300, "the first update")
    wait_for(lambda: train_steps(root) > killed_at, 300, "training after the restart")
    assert actor.popen.poll() is None  # the same actor process, never restarted
    wait_for(lambda: actor.text().count("\n") > actor_lines, 120, "the actor to keep collecting")
    assert "actor 0: first report to the learner" in actor.text()
    assert relaunched.wait(timeout=600) == 0, relaunched.text()[-3000:]
    # The server stopped by SIGTERM checkpoints its tables; a new one serves them all again.
    os.killpg(server.popen.pid, signal.SIGTERM)
    assert server.wait(timeout=120) == 0, server.text()[-3000:]
    saved = re.search(r"checkpoint \S+ written in \S+ s with (\d+) to (\d+) experience items", server.text())
    assert saved, server.text()[-3000:]
    restarted = start([*common, "--role=server", f"--port={port}"], logs / "server2.log")
    loaded = wait_for(
      lambda: re.search(r"listening on port \d+ with (\d+) experience items", restarted.text()), 120, "load"
    )
    first = re.search(r"listening on port \d+ with (\d+) experience items", server.text())
    # Actors blocked by the rate limiter (the learner is done): nothing was inserted meanwhile.
    assert int(first.group(1)) == 0 and int(loaded.group(1)) == int(saved.group(1)) == int(saved.group(2))
    assert int(loaded.group(1)) >= 1_000
  records = rf.RunFolder(root).read_metrics()
  assert records[-1]["env_steps"] >= 2_000
  steps = [r["env_steps"] for r in records]
  assert steps == sorted(steps)  # truncated back to the checkpoint, then monotonic


# ---------------------------------------------------------------- learning


# The in-process learning tests (test_learning.py) hold every agent to CartPole-v1's 475; here
# the question is whether actors, server and learner together learn at all, so these runs stop at
# CartPole-v0's "solved" 195 (a random policy averages ~22), about half the time of a 475 run.
LEARNED = 195.0
STOP_AT_LEARNED = f"--gin_bindings=run_experiment.target_return = {LEARNED}"
# Distributed DQN plateaus near 100 for a long and variable time before it jumps to 500 (one
# run on 2026-12-02: 125 at 3k env steps, 150 at 6k, then 30-120 until 500 at 47k, 445 s; other
# runs passed 195 within 50 s), so its test asks for 150, 7x a random policy's ~22, where the
# time to the jump is not part of what is tested. Why it plateaus longer than in-process DQN
# is an open question of the distributed issue.
DQN_LEARNED = 150.0


def test_dqn_with_two_actors_learns_cartpole(tmp_path):
  root = tmp_path / "run"
  # No evaluator role (it would take a core of two from the actors and the learner); the
  # supervisor test below checks that one follows the exports.
  stop = f"--gin_bindings=run_experiment.target_return = {DQN_LEARNED}"
  result = run_launch(
    f"--gin_file={DQN}", stop, f"--root_dir={root}", "--num_actors=2", "--noeval", timeout=1_500
  )
  assert result.returncode == 0, result.stderr[-3000:]
  records = rf.RunFolder(root).read_metrics()
  assert records[-1]["average_return"] >= DQN_LEARNED, records[-1]
  assert records[-1]["num_episodes"] == 10


@pytest.mark.slow
def test_sac_runs_with_an_actor_at_toy_scale(tmp_path):
  """SAC through server, actor and learner: the Reverb plan of `OffPolicyTrainer` carries it
  as it carries DQN. Slow (144 s on this shared 2-core machine, beside a benchmark run): three
  TensorFlow processes start and trace; the plan itself is checked above in a second."""
  root = tmp_path / "run"
  small = [
    "run_experiment.num_env_steps = 1_000",
    "OffPolicyTrainer.initial_collect_steps = 300",
    "tanh_normal_actor_network.fc_layer_params = (64, 64)",
    "critic_network.joint_fc_layer_params = (64, 64)",
    "make_dataset.batch_size = 64",
  ]
  bindings = [f"--gin_bindings={b}" for b in [*TOY, *small]]
  result = run_launch(
    f"--gin_file={SAC}", *bindings, f"--root_dir={root}", "--num_actors=1", "--noeval", timeout=600
  )
  assert result.returncode == 0, result.stderr[-3000:]
  records = rf.RunFolder(root).read_metrics()
  assert records[-1]["env_steps"] >= 1_000 and records[-1]["train_steps"] > 0, records[-1]
  assert records[-1]["num_episodes"] == 2


def test_ppo_with_two_actors_learns_cartpole(tmp_path):
  root = tmp_path / "run"
  result = run_launch(
    f"--gin_file={PPO}", STOP_AT_LEARNED, f"--root_dir={root}", "--num_actors=2", "--noeval", timeout=1_500
  )
  assert result.returncode == 0, result.stderr[-3000:]
  records = rf.RunFolder(root).read_metrics()
  assert records[-1]["average_return"] >= LEARNED, records[-1]
  assert "Final evaluation: average return" in result.stdout


def test_supervisor_restarts_a_killed_actor_and_stops_every_role_on_sigint(tmp_path):
  root = tmp_path / "run"
  with processes() as start:
    # No early stop: a lucky learner reached the gin's 475 at 2k env steps once, ending the run
    # while the killed actor was being restarted.
    no_stop = "--gin_bindings=run_experiment.target_return = None"
    often = "--gin_bindings=run_experiment.policy_export_interval = 1_000"  # for the evaluator role
    command = [f"--gin_file={DQN}", no_stop, often, f"--root_dir={root}", "--num_actors=1"]
    launch = start(command, tmp_path / "launch.log")
    roles_file = root / rf.LOGS / "roles.json"
    wait_for(lambda: train_steps(root) > 0, 600, "training")
    victim = json.loads(roles_file.read_text())["actor 0"]
    os.kill(victim, signal.SIGKILL)
    before = train_steps(root)
    wait_for(lambda: "actor 0 exited with -9; restarting it" in launch.text(), 60, "the restart line")
    wait_for(lambda: json.loads(roles_file.read_text())["actor 0"] != victim, 30, "a new actor 0")
    actor_log = root / rf.LOGS / "actor_0.log"
    wait_for(lambda: actor_log.read_text().count("collecting with") >= 2, 300, "the new actor to collect")
    wait_for(lambda: train_steps(root) > before, 300, "training with the restarted actor")
    exports = lambda: rf.RunFolder(root).read_metrics("eval_exports.jsonl")
    wait_for(lambda: exports(), 300, "the evaluator to follow an export")
    # One record format: the leading fields of metrics.jsonl, the env steps from the export.
    assert all(list(e)[:2] == ["env_steps", "train_steps"] and "average_return" in e for e in exports())
    assert all(e["env_steps"] >= 1_000 for e in exports())
    pids = json.loads(roles_file.read_text())
    os.killpg(launch.popen.pid, signal.SIGINT)
    assert launch.wait(timeout=300) == 130
    for pid in pids.values():
      with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone
    assert "stopped by signal 2; run the same command to resume" in launch.text()
  assert list((root / rf.CHECKPOINTS).glob("ckpt-*.index"))  # the learner saved on the way out


# ---------------------------------------------------------------- single process, embedded server


def test_reverb_replay_binding_trains_checkpoints_and_resumes(tmp_path):
  """`OffPolicyTrainer.replay_fn = @reverb_replay`: the replay lives in an embedded Reverb
  server, a resumed run gets its replay back from the checkpoint, and the server's temporary
  folder is gone when the process has exited (`cli.exit_process` skips interpreter teardown)."""
  from conftest import train_command

  root = tmp_path / "run"
  bindings = ["OffPolicyTrainer.replay_fn = @reverb_replay", "run_experiment.num_env_steps = 700"]
  command = train_command(root, bindings=bindings)
  with processes():
    process = subprocess.Popen(command, cwd=REPO, env=cli_env(), stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(list((root / rf.CHECKPOINTS).glob("ckpt-*.replay_buffer"))) >= 2, 300, "checkpoints")
    process.send_signal(signal.SIGKILL)
    process.wait()
  saved = sorted((root / rf.CHECKPOINTS).glob("ckpt-*.replay_buffer/reverb/DONE"))
  assert saved, "a Reverb checkpoint of the table is part of the run's checkpoint"
  temporary = tmp_path / "tmp"
  temporary.mkdir()
  env = {**cli_env(), "TMPDIR": str(temporary)}
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  resumed = re.search(r"Resuming .* at (\d+) env steps", result.stderr)
  assert resumed and 0 < int(resumed.group(1)) < 700
  assert "Restored replay_buffer" in result.stderr
  assert json.loads(result.stdout.splitlines()[-1].removeprefix("Final evaluation: "))["env_steps"] >= 700
  assert not list(temporary.glob("reverb_replay_*"))


def test_reverb_replay_round_trip_keeps_every_window(tmp_path):
  import numpy as np
  import tensorflow as tf
  from tf_agents.trajectories import trajectory

  from pipelines.replay import reverb_replay

  spec = trajectory.Trajectory(
    step_type=tf.TensorSpec([], tf.int32),
    observation=tf.TensorSpec([2], tf.float32),
    action=tf.TensorSpec([], tf.int64),
    policy_info=(),
    next_step_type=tf.TensorSpec([], tf.int32),
    reward=tf.TensorSpec([], tf.float32),
    discount=tf.TensorSpec([], tf.float32),
  )

  def step(t):  # two copies; copy c's observation is (t, c)
    ones = tf.ones([2])
    return trajectory.Trajectory(
      tf.ones([2], tf.int32), tf.constant([[t, 0.0], [t, 1.0]]), tf.constant([t, t], tf.int64), (),
      tf.ones([2], tf.int32), ones, ones,
    )  # fmt: skip

  replay = reverb_replay.reverb_replay(spec, num_envs=2, capacity=100)
  for t in range(6):
    replay.add_batch(step(t))
  replay.save_to(tmp_path / "saved")
  restored = reverb_replay.reverb_replay(spec, num_envs=2, capacity=100)
  assert restored.num_frames() == 0
  restored.restore_from(tmp_path / "saved")
  assert restored.num_frames() == 10  # 5 two-step windows per copy
  # 512 uniform samples of 10 windows miss one with probability ~1e-22 (64: ~1%, seen).
  experience, _ = next(iter(restored.as_dataset(sample_batch_size=512, num_steps=2)))
  observation = experience.observation.numpy()
  assert np.all(observation[:, 1, 0] == observation[:, 0, 0] + 1)  # consecutive steps
  assert np.all(observation[:, 1, 1] == observation[:, 0, 1])  # of one copy
  assert {tuple(o) for o in observation[:, 0]} == {(t, c) for t in range(5) for c in (0.0, 1.0)}


# ---------------------------------------------------------------- what the roles agree on


@pytest.mark.parametrize(
  ("gin_file", "bindings", "expected"),
  [
    # 4 gradient steps x 64 transitions per 8 env steps: 32 samples per inserted transition.
    (DQN, [], dict(on_policy=False, sequence_length=2, stride=1, samples_per_insert=32.0, min_size=1_000)),
    (DQN, ["OffPolicyTrainer.train_steps_per_iteration = 8"], dict(samples_per_insert=64.0)),
    # 256 env steps over 8 copies: queue items of 32 steps, 8 per update.
    (PPO, [], dict(on_policy=True, sequence_length=32, stride=32, batch_size=8, capacity=8)),
    # SAC and TD3 (the Zoo's Pendulum): 1 gradient step x 256 transitions per env step.
    (SAC, [], dict(on_policy=False, sequence_length=2, samples_per_insert=256.0, min_size=256)),
    ("gin/td3_pendulum.gin", [], dict(samples_per_insert=256.0, min_size=10_000, capacity=200_000)),
  ],
  ids=["dqn", "dqn-ratio-8", "ppo", "sac", "td3"],
)
def test_plan_keeps_the_single_process_ratios(gin_file, bindings, expected):
  import gin

  from pipelines import cli, configurables  # noqa: F401
  from pipelines.distributed import distributed

  gin.clear_config()
  try:
    cli.parse_gin([str(REPO / gin_file)], bindings)
    plan = distributed.plan_from_gin()
  finally:
    gin.clear_config()
  assert {key: getattr(plan, key) for key in expected} == expected


def test_plan_refuses_whole_episode_batches():
  import gin

  from pipelines import cli, configurables  # noqa: F401
  from pipelines.distributed import distributed
  from pipelines.errors import PipelineError

  gin.clear_config()
  try:
    cli.parse_gin([str(REPO / "gin/reinforce_cartpole.gin")], [])
    with pytest.raises(PipelineError, match="whole-episode batches"):
      distributed.plan_from_gin()
  finally:
    gin.clear_config()


def test_a_subclass_of_a_trainer_plans_from_its_own_gin_settings():
  """The trainer class says what the roles share (`replay_plan`), so a subclass registered
  under its own gin name works distributed, read from its own bindings (the gin file's
  OffPolicyTrainer bindings do not reach a configurable of another name, in-process either)."""
  import gin

  from pipelines import cli, configurables  # noqa: F401
  from pipelines.distributed import distributed
  from pipelines.training import learning

  try:
    gin.configurable("SlowRatioTrainer")(type("SlowRatioTrainer", (learning.OffPolicyTrainer,), {}))
  except ValueError:  # registered by an earlier call in this process
    pass
  gin.clear_config()
  try:
    bindings = [
      "build_components.trainer_fn = @SlowRatioTrainer",
      "SlowRatioTrainer.collect_steps_per_iteration = 8",
      "SlowRatioTrainer.train_steps_per_iteration = 1",
    ]
    cli.parse_gin([str(REPO / DQN)], bindings)
    plan = distributed.plan_from_gin()
  finally:
    gin.clear_config()
  assert plan.samples_per_insert == 1 * 64 / 8 and plan.env_steps_per_iteration == 8
  assert not plan.on_policy
