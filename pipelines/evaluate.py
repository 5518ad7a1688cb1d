"""Evaluate a run's exported greedy policy, or the uniform random baseline, on its environment.

    pipelines-evaluate --root_dir=runs/dqn_cartpole   # as many episodes as the run evaluates
    python -m pipelines.evaluate --root_dir=runs/dqn_cartpole --policy=random
    pipelines-evaluate --root_dir=runs/dqn_cartpole --video=episodes.mp4 --num_episodes=3
    pipelines-evaluate --root_dir=runs/dqn_cartpole --step=best   # or --step=20000, --step=latest

Rebuilds the evaluation environment from the run's own `operative_config.gin` and prints
one JSON line: mean, std, min and max return over the episodes, and their count. The
number of episodes and epsilon are the run's own evaluation settings unless
`--num_episodes` (or `--gin_bindings`) says otherwise. With
`--video` the episodes are played one by one on a single copy and recorded (MP4 or GIF,
the return drawn on each frame; see `pipelines/training/video.py`). `--step` picks the policy: the
latest export (`policy/`), the one of the best evaluation, or the one saved at N env steps
(`policies/<N>/`, loaded into the latest export's graph). `--gin_bindings` (repeatable)
are applied after the run's operative config, e.g. to cap evaluation games:

    pipelines-evaluate --root_dir=runs/breakout --video=breakout.mp4 --num_episodes=1
      --gin_bindings="eval/eval/AtariProtocol.max_episode_frames = 18_000"

Bind a parameter under the scope `operative_config.gin` records it with: gin lets the most
specific scope win, so there `eval/AtariProtocol.x` would lose to the file's `eval/eval/AtariProtocol.x`
(`make_environment` re-enters its scope around `env_fn`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import flags

from pipelines import cli
from pipelines.training import video

flags.DEFINE_string("root_dir", None, "Run folder written by pipelines-train.")
flags.DEFINE_integer(
  "num_episodes",
  None,
  "Whole episodes to play (default: the run's own Evaluator.num_episodes; with --video, 1).",
)
flags.DEFINE_enum("policy", "greedy", ["greedy", "random"], "The exported policy, or uniform random.")
flags.DEFINE_integer("seed", 12_345, "Seed of the evaluation environments.")
flags.DEFINE_string("video", None, "Record the episodes to this .mp4 or .gif file.")
flags.DEFINE_string(
  "step", "latest", "Which saved policy: latest (the last export), best (best evaluation) or N env steps."
)
flags.DEFINE_float("video_fps", None, "Frames per second of the video (default: the environment's).")
flags.DEFINE_multi_string(
  "gin_bindings",
  [],
  "Gin bindings applied after the run's operative config, scoped as operative_config.gin names them.",
)
flags.mark_flag_as_required("root_dir")
FLAGS = flags.FLAGS


def _evaluate() -> int:
  from pipelines.storage import run_folder as rf

  # Bad flags are refused before TensorFlow loads (~10 s).
  folder = rf.RunFolder(FLAGS.root_dir)
  config = folder.path(rf.OPERATIVE_CONFIG)
  if not config.is_file():
    raise cli.PipelineError(f"{folder.root} holds no run ({rf.OPERATIVE_CONFIG} missing)")
  if FLAGS.num_episodes is not None and FLAGS.num_episodes < 1:
    raise cli.PipelineError("--num_episodes must be >= 1")
  if FLAGS.video:
    video.check_output(Path(FLAGS.video).expanduser().absolute())
  if FLAGS.policy == "greedy" and not any(folder.path(p).exists() for p in (rf.POLICY, rf.POLICY + ".old")):
    raise cli.PipelineError(f"{folder.root} has no exported policy yet ({rf.POLICY}/ missing)")
  step, variables = policy_at(folder, FLAGS.step) if FLAGS.policy == "greedy" else (None, None)
  cli.quiet_libraries()
  import gin
  import tensorflow as tf
  from tf_agents.environments import tf_py_environment

  from pipelines import configurables, devices
  from pipelines.storage import checkpoints  # noqa: F401
  from pipelines.training import evaluation

  cli.parse_gin([str(config)], FLAGS.gin_bindings)
  devices.configure()  # before the environment's and the policy's first op
  with gin.config_scope("eval"):
    # A video shows one episode at a time: one copy, whatever the run evaluated with.
    # In this process: its frames are read from the game the policy plays.
    copies = {"num_envs": 1, "parallel": False} if FLAGS.video else {}
    py_env = configurables.environments.make_environment(seed=FLAGS.seed, **copies)
  if FLAGS.video:
    py_env = video.playable(py_env, seed=FLAGS.seed)  # ale-py's vector env cannot render
  env = tf_py_environment.TFPyEnvironment(py_env)
  # The random policy's draws (and any other unseeded TensorFlow op) follow --seed, as a
  # run's follow its seed (`build_components`): the same command gives the same episodes.
  tf.random.set_seed(FLAGS.seed)
  if FLAGS.policy == "random":
    policy = evaluation.random_policy(env)
  else:
    policy = checkpoints.load_saved_policy(folder.path(rf.POLICY), variables)
  # The run's own evaluation settings (episodes, epsilon) unless a flag says otherwise.
  chosen = {} if FLAGS.num_episodes is None else {"num_episodes": FLAGS.num_episodes}
  evaluator = evaluation.Evaluator(**chosen)
  if FLAGS.video:
    summary = _record_video(py_env, env, policy, evaluator.epsilon)
  else:
    result = evaluator(env, policy, seed=FLAGS.seed)
    summary = {**result.summary(), "seconds": round(result.seconds, 3)}
  chosen = {"step": step, "train_step": int(policy.get_train_step())} if FLAGS.policy == "greedy" else {}
  print(json.dumps({"policy": FLAGS.policy, **chosen, **summary}))
  py_env.close()
  return 0


def policy_at(folder, step: str) -> tuple[str | int, Path | None]:
  """(the step shown, the numbered policy's folder or None for the latest export) for
  `--step`; a step that was not saved is one error listing those that were."""
  from pipelines.storage import run_folder as rf

  history = folder.path(rf.POLICIES)
  if step == "latest":
    return "latest", None
  if step == "best":
    try:
      best = json.loads((history / rf.BEST_POLICY).read_text())["env_steps"]
    except (OSError, ValueError, KeyError):
      raise cli.PipelineError(
        f"{folder.root} has no best policy yet ({rf.POLICIES}/{rf.BEST_POLICY} missing)"
      ) from None
    return best, history / str(best)
  saved = sorted(int(p.name) for p in history.glob("*") if p.name.isdigit()) if history.is_dir() else []
  if step.isdigit() and int(step) in saved:
    return int(step), history / str(int(step))
  listed = ", ".join(map(str, saved)) or "none"
  raise cli.PipelineError(
    f"--step={step}: no policy saved at that step in {folder.root / rf.POLICIES}; "
    f"available: latest, best, or env steps {listed}"
  )


def _record_video(py_env, env, policy, epsilon: float) -> dict:
  from pipelines.training import evaluation

  path = Path(FLAGS.video).expanduser().absolute()
  fps = FLAGS.video_fps or video.fps(py_env)
  with video.Writer(path, fps) as sink:
    episodes = FLAGS.num_episodes or 1  # a video is watched: one episode unless asked for more
    recording = video.record(py_env, env, policy, sink, episodes, epsilon, seed=FLAGS.seed)
  result = evaluation.EvalResult(recording.returns, recording.lengths, seconds=0.0)
  return {
    **result.summary(),
    "returns": recording.returns,
    "lengths": recording.lengths,
    "video": str(path),
    "frames": recording.frames,
    "size": list(recording.size),
    "fps": fps,
  }


def main(argv) -> None:
  del argv
  cli.exit_process(cli.command(_evaluate, "pipelines-evaluate"))


def run() -> None:
  """Console-script entry point (`pipelines-evaluate`)."""
  cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
  run()
