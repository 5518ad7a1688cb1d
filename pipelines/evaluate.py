"""Evaluate a run's exported greedy policy, or the uniform random baseline, on its environment.

    pipelines-evaluate --root_dir=runs/dqn_cartpole --num_episodes=10
    python -m pipelines.evaluate --root_dir=runs/dqn_cartpole --policy=random

Rebuilds the evaluation environment from the run's own `operative_config.gin` and prints
one JSON line: mean, std, min and max return over the episodes, and their count.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from pipelines import cli

flags.DEFINE_string("root_dir", None, "Run folder written by pipelines-train.")
flags.DEFINE_integer("num_episodes", 10, "Whole episodes to play.")
flags.DEFINE_enum("policy", "greedy", ["greedy", "random"], "The exported policy, or uniform random.")
flags.DEFINE_integer("seed", 12_345, "Seed of the evaluation environments.")
flags.mark_flag_as_required("root_dir")
FLAGS = flags.FLAGS


def _evaluate() -> int:
  cli.quiet_libraries()
  from tf_agents.environments import tf_py_environment

  import gin
  from pipelines import checkpoints, configurables, evaluation  # noqa: F401
  from pipelines import run_folder as rf

  folder = rf.RunFolder(FLAGS.root_dir)
  config = folder.path(rf.OPERATIVE_CONFIG)
  if not config.is_file():
    raise cli.PipelineError(f"{folder.root} holds no run ({rf.OPERATIVE_CONFIG} missing)")
  if FLAGS.num_episodes < 1:
    raise cli.PipelineError("--num_episodes must be >= 1")
  cli.parse_gin([str(config)], [])
  with gin.config_scope("eval"):
    py_env = configurables.environments.make_environment(seed=FLAGS.seed)
  env = tf_py_environment.TFPyEnvironment(py_env)
  if FLAGS.policy == "random":
    policy = evaluation.random_policy(env)
  else:
    if not folder.path(rf.POLICY).exists() and not folder.path(rf.POLICY + ".old").exists():
      raise cli.PipelineError(f"{folder.root} has no exported policy yet ({rf.POLICY}/ missing)")
    policy = checkpoints.load_saved_policy(folder.path(rf.POLICY))
  evaluator = evaluation.Evaluator(num_episodes=FLAGS.num_episodes)  # epsilon: the run's own
  result = evaluator(env, policy, seed=FLAGS.seed)
  print(json.dumps({"policy": FLAGS.policy, **result.summary(), "seconds": round(result.seconds, 3)}))
  py_env.close()
  return 0


def main(argv) -> None:
  del argv
  sys.exit(cli.main_with_errors(_evaluate, "pipelines-evaluate"))


def run() -> None:
  """Console-script entry point (`pipelines-evaluate`)."""
  app.run(main)


if __name__ == "__main__":
  run()
