r"""Train an agent from gin files: the one entry point of every experiment.

    pipelines-train --gin_file=gin/dqn_cartpole.gin --root_dir=runs/dqn_cartpole
    python -m pipelines.train --gin_file=gin/dqn_cartpole.gin \
        --gin_bindings='build_components.seed = 3' --root_dir=runs/seed3

Gin is the only channel for the experiment's configuration; the flags only say which
gin to read and where the run folder is. Re-running the same command resumes the run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import flags

from pipelines import cli
from pipelines.tools import tracking

flags.DEFINE_multi_string("gin_file", [], "Gin config file(s); later files override earlier.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. 'build_components.seed = 1'.")
flags.DEFINE_string("root_dir", None, "Run folder: created, or resumed if it holds this run.")
flags.DEFINE_string(
  "wandb_project", None, "Also mirror the TensorBoard scalars to this W&B project (needs the wandb extra)."
)
flags.DEFINE_string(
  "init_from",
  None,
  "Start a new run from another run's agent: RUN_DIR (its newest checkpoint) or RUN_DIR:ENV_STEPS.",
)
flags.DEFINE_bool("init_replay", False, "With --init_from, also start from its replay (off-policy agents).")
flags.mark_flag_as_required("root_dir")
FLAGS = flags.FLAGS


def _train() -> int:
  cli.require_gin_files(FLAGS.gin_file)
  # Before TensorFlow loads (seconds, and its start-up lines): a typo is refused at once.
  cli.check_gin_syntax(FLAGS.gin_file, FLAGS.gin_bindings)
  if FLAGS.init_replay and not FLAGS.init_from:
    raise cli.PipelineError("--init_replay needs --init_from")
  if FLAGS.wandb_project:
    tracking.import_wandb()  # a missing package is one line, before anything is written
  cli.quiet_libraries()  # before tf_agents imports gym, which prints a notice
  from tf_agents.system import system_multiprocessing

  # What `system_multiprocessing.handle_main` does besides `app.run`: environment copies in
  # worker processes (`make_environment.parallel`) need it.
  system_multiprocessing.enable_interactive_mode()
  from pipelines import configurables, devices  # noqa: F401  registers every configurable
  from pipelines.training import experiment, warm_start  # noqa: F401  registers every configurable

  cli.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  if FLAGS.init_from and not warm_start.kept_checkpoints(Path(FLAGS.root_dir).expanduser()):
    warm_start.find_checkpoint(FLAGS.init_from)  # a bad source: its one line, nothing before it
  devices.configure()  # before the run builds its first variable
  cli.absorb_xla_start_lines()
  warm = {"init_from": FLAGS.init_from, "init_replay": FLAGS.init_replay}
  if FLAGS.wandb_project:
    config = {"gin_files": FLAGS.gin_file, "gin_bindings": FLAGS.gin_bindings, "root_dir": FLAGS.root_dir}
    with tracking.wandb_run(FLAGS.wandb_project, FLAGS.root_dir, config):
      final = experiment.run_experiment(FLAGS.root_dir, **warm)
  else:
    final = experiment.run_experiment(FLAGS.root_dir, **warm)
  print(f"Run folder: {experiment.rf.RunFolder(FLAGS.root_dir).root}")
  print("Final evaluation: " + json.dumps(final))
  return 0


def main(argv) -> None:
  del argv
  cli.exit_process(cli.command(_train, "pipelines-train"))


def run() -> None:
  """Console-script entry point (`pipelines-train`)."""
  cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
  run()
