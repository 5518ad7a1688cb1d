"""Distributed collection benchmark: actors scaling, learner sampling, Reverb's overhead.

    .venv/bin/python scripts/bench_distributed.py                    # DQN CartPole, 1/2/4 actors
    .venv/bin/python scripts/bench_distributed.py --actors=1,2 --seconds=20

1. Collection: this process serves the experiment's Reverb tables (rate limit off: no
   learner is reading) and pushes the initial weights; N `pipelines-launch --role=actor`
   processes collect with the collect policy and report their env steps. Env steps/s over
   `--seconds` after every actor's first report, for each N, and the ratio to 1 actor.
2. Learner: from that server, gradient steps of the agent (batch from make_dataset) on
   Reverb samples, and sampling alone; samples/s = transitions sampled per second. The
   same update on samples of an in-process `TFUniformReplayBuffer` holding the same
   number of transitions gives the ratio.
3. Overhead: the single-process loop (collect + train in one graph, the gin file's own
   ratio) with its replay in a `TFUniformReplayBuffer` and with
   `OffPolicyTrainer.replay_fn = @reverb_replay`: env steps/s and their ratio.

On a machine with C cores, N actors plus this process share them: beyond C - 1 actors
the total cannot grow; the figures show where that happens here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines import cli  # noqa: E402

cli.quiet_libraries()

import gin  # noqa: E402
import tensorflow as tf  # noqa: E402
from tf_agents.experimental.distributed import reverb_variable_container  # noqa: E402
from tf_agents.policies import random_tf_policy  # noqa: E402

from pipelines import configurables  # noqa: E402, F401
from pipelines.distributed import distributed  # noqa: E402
from pipelines.replay import replay  # noqa: E402
from pipelines.replay import reverb_replay as rr  # noqa: E402
from pipelines.training import collection, experiment, learning  # noqa: E402


def parse(gin_file: str, bindings: list[str]) -> None:
  gin.clear_config()
  cli.parse_gin([gin_file], bindings)


def measure_collection(gin_file: str, actor_counts: list[int], seconds: float) -> dict[int, float]:
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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", default="gin/dqn_cartpole.gin")
  parser.add_argument("--actors", default="1,2,4")
  parser.add_argument("--seconds", type=float, default=30.0)
  parser.add_argument("--env_steps", type=int, default=5_000, help="single-process comparison")
  args = parser.parse_args()
  os.chdir(REPO)
  print(f"{os.cpu_count()} CPU cores; {args.gin_file}")
  print("1-2. Actors (collection only) and learner:")
  measure_collection(args.gin_file, [int(n) for n in args.actors.split(",")], args.seconds)
  print("3. Reverb vs in-process replay, one process:")
  single_process(args.gin_file, args.env_steps)


if __name__ == "__main__":
  main()
