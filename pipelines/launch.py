"""Launch an experiment as separate processes around a Reverb server.

    pipelines-launch --gin_file=gin/dqn_cartpole.gin --root_dir=runs/dist --num_actors=4

starts, on this machine, a Reverb server, 4 collect actors, one learner and one evaluator
(`--role=all`, the default), prints their health and progress every few seconds,
restarts a role that dies (a learner resumes from its checkpoint), and stops them all
on Ctrl-C (the learner saves a checkpoint first). Each role writes `<root_dir>/logs/<role>.log`.

One role per machine, with the same gin files everywhere (start them in any order; each
waits for what it needs):

    pipelines-launch --role=server  --port=8008 ...
    pipelines-launch --role=learner --replay_address=HOST:8008 --root_dir=runs/dist ...
    pipelines-launch --role=actor   --replay_address=HOST:8008 --actor_id=0 ...
    pipelines-launch --role=eval    --root_dir=runs/dist ...   # where the learner's folder is

The Reverb server has no authentication and listens on all interfaces: see README.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import flags

from pipelines import cli, signals

ROLES = ("all", "server", "learner", "actor", "eval")

flags.DEFINE_multi_string("gin_file", [], "Gin config file(s), the same as for pipelines-train.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, the same on every role.")
flags.DEFINE_string("root_dir", None, "Run folder (the learner's; logs and server checkpoints go there too).")
flags.DEFINE_string("role", "all", f"One of {', '.join(ROLES)}; 'all' runs every role on this machine.")
flags.DEFINE_integer("num_actors", 2, "Actor processes (--role=all).")
flags.DEFINE_integer("actor_id", 0, "This actor's index (--role=actor): seeds its environments.")
flags.DEFINE_string("replay_address", None, "HOST:PORT of the Reverb server (learner, actor).")
flags.DEFINE_integer("port", None, "Port of the Reverb server (server; --role=all: default a free port).")
flags.DEFINE_float(
  "wait_timeout", 300.0, "Seconds a role waits for the server (or first weights) before failing."
)
flags.DEFINE_boolean("eval", True, "Run the evaluator role (--role=all).")
flags.mark_flag_as_required("root_dir")
FLAGS = flags.FLAGS

_STATUS_SECONDS = 10.0


def _check_flags() -> None:
  """Flag mistakes fail in a second, before TensorFlow is imported."""
  from pipelines.replay import addresses as rr

  if FLAGS.role not in ROLES:
    raise cli.PipelineError(f"unknown --role {FLAGS.role!r}; choose one of {', '.join(ROLES)}")
  cli.require_gin_files(FLAGS.gin_file)
  if FLAGS.role in ("learner", "actor"):
    if not FLAGS.replay_address:
      raise cli.PipelineError(f"--role={FLAGS.role} needs --replay_address=HOST:PORT")
    rr.parse_address(FLAGS.replay_address)
  if FLAGS.role == "server" and FLAGS.port is None:
    raise cli.PipelineError("--role=server needs --port")
  if FLAGS.port is not None:
    rr.check_port_free(FLAGS.port)
  if FLAGS.role == "all" and FLAGS.num_actors < 1:
    raise cli.PipelineError("--num_actors must be >= 1")


def _parse_config():
  cli.quiet_libraries()
  from pipelines import configurables  # noqa: F401  registers every configurable
  from pipelines.distributed import distributed  # noqa: F401

  cli.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  return distributed.plan_from_gin()


def _launch() -> int:
  _check_flags()
  _parse_config()
  from pipelines.distributed import distributed

  role = FLAGS.role
  if role != "all":  # each role's process (--role=all: its children) picks its device
    from pipelines import devices

    devices.configure()
  if role == "learner":  # the one role that compiles with XLA (distributed.ReverbLearner)
    cli.absorb_xla_start_lines()
  if role == "server":
    return distributed.run_server(FLAGS.root_dir, FLAGS.port)
  if role == "learner":
    return distributed.run_learner(FLAGS.root_dir, FLAGS.replay_address, FLAGS.wait_timeout)
  if role == "actor":
    return distributed.run_actor(FLAGS.replay_address, FLAGS.actor_id, FLAGS.wait_timeout)
  if role == "eval":
    return distributed.run_evaluator(FLAGS.root_dir)
  return _supervise()


class _Role:
  """One child process of `--role=all`, restarted when it dies unexpectedly."""

  def __init__(self, name: str, args: list[str], log_dir: Path):
    self.name, self.args, self.log = name, args, log_dir / f"{name.replace(' ', '_')}.log"
    from pipelines.tools import child_runs

    self.restarts = child_runs.RestartBudget()
    self.process = None
    self.start()

  def start(self) -> None:
    from pipelines.tools import child_runs

    command = [sys.executable, "-m", "pipelines.launch", *self.args]
    # Own session: Ctrl-C must not reach the server before the learner has saved.
    self.process = child_runs.TrainProcess(command, self.log, own_session=True)


def _supervise() -> int:
  from pipelines.replay import reverb_replay as rr
  from pipelines.storage import run_folder as rf

  folder = rf.RunFolder(FLAGS.root_dir)
  folder.check_usable()
  port = FLAGS.port or rr.free_port()
  folder.path(rf.LOGS).mkdir(parents=True, exist_ok=True)
  common = [
    *(f"--gin_file={f}" for f in FLAGS.gin_file),
    *(f"--gin_bindings={b}" for b in FLAGS.gin_bindings),
  ]
  common += [f"--root_dir={folder.root}", f"--wait_timeout={FLAGS.wait_timeout}"]
  address = f"localhost:{port}"
  print(rr.SECURITY_NOTE.format(port=port), file=sys.stderr)
  logs = folder.path(rf.LOGS)
  roles = [_Role("server", [*common, "--role=server", f"--port={port}"], logs)]
  roles.append(_Role("learner", [*common, "--role=learner", f"--replay_address={address}"], logs))
  for i in range(FLAGS.num_actors):
    roles.append(
      _Role(f"actor {i}", [*common, "--role=actor", f"--actor_id={i}", f"--replay_address={address}"], logs)
    )
  if FLAGS.eval:
    roles.append(_Role("eval", [*common, "--role=eval"], logs))
  print(f"launched {', '.join(r.name for r in roles)}; logs in {logs}", file=sys.stderr)
  _write_pids(logs, roles)

  # Installed until every role has stopped: a second Ctrl-C does not cut the shutdown short.
  stop = signals.StopSignals().install()
  learner = roles[1]
  started, last_status = time.monotonic(), 0.0
  code = None
  while stop.received is None and code is None:
    time.sleep(0.5)
    for role in roles:
      rc = role.process.poll()
      if rc is None:
        continue
      if role is learner and rc == 0:
        code = 0  # budget spent or target reached
        break
      if rc == 2:  # bad input: relaunching cannot help
        print(f"pipelines-launch: {role.name} failed: {role.process.error_line()}", file=sys.stderr)
        code = 2
        break
      if not role.restarts.spend(role.process.seconds):
        print(
          f"pipelines-launch: {role.name} died {role.restarts.used + 1} times in a row: "
          f"{role.process.error_line()}",
          file=sys.stderr,
        )
        code = 1
        break
      print(
        f"pipelines-launch: {role.name} exited with {rc}; restarting it ({role.restarts.used})",
        file=sys.stderr,
      )
      role.start()
      _write_pids(logs, roles)
    if time.monotonic() - last_status > _STATUS_SECONDS:
      print(_status(folder, roles, time.monotonic() - started), file=sys.stderr, flush=True)
      last_status = time.monotonic()

  # Learner first (it saves a checkpoint and asks the server for one), server last.
  for group in ([learner], roles[2:], roles[:1]):
    for role in group:
      role.process.terminate()
    for role in group:
      role.process.wait(timeout=120)
  stop.restore()
  print(_status(folder, roles, time.monotonic() - started), file=sys.stderr)
  if stop.received is not None:
    print(
      f"pipelines-launch: stopped by signal {stop.received}; run the same command to resume", file=sys.stderr
    )
    return stop.exit_code
  if code == 0:
    records = folder.read_metrics()
    if records:
      last = records[-1]
      print(f"Run folder: {folder.root}")
      print(f"Final evaluation: average return {last['average_return']:.1f} at {last['env_steps']} env steps")
  return code


def _write_pids(logs: Path, roles: list[_Role]) -> None:
  """`logs/roles.json`: each role's process id, for `kill` or `ps` (rewritten on restarts)."""
  text = json.dumps({r.name: r.process.pid for r in roles}, indent=1) + "\n"
  (logs / "roles.json.tmp").write_text(text)
  (logs / "roles.json.tmp").replace(logs / "roles.json")


def _status(folder, roles: list[_Role], seconds: float) -> str:
  from pipelines.storage import run_folder as rf

  up = [r for r in roles if r.process.poll() is None]
  actors = [r for r in roles if r.name.startswith("actor")]
  records = folder.read_metrics()
  learner = "no evaluation yet"
  if records:
    last = records[-1]
    learner = (
      f"{last['env_steps']} env steps, train step {last['train_steps']}, eval {last['average_return']:.1f}"
    )
  exports = folder.read_metrics(rf.EVAL_EXPORTS)
  evaluator = (
    f"; evaluator: {exports[-1]['average_return']:.1f} at train step {exports[-1]['train_steps']}"
    if exports
    else ""
  )
  return (
    f"[{int(seconds) // 60:02d}:{int(seconds) % 60:02d}] {len(up)}/{len(roles)} roles up "
    f"(actors {sum(r in up for r in actors)}/{len(actors)}) | learner: {learner}{evaluator}"
  )


def main(argv) -> None:
  del argv
  cli.exit_process(cli.command(_launch, "pipelines-launch"))


def run() -> None:
  """Console-script entry point (`pipelines-launch`)."""
  cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
  run()
