"""SB3 + RL Zoo on CartPole-v1: time to the first 10-episode greedy mean >= 475, one JSON line.

    /work/sb3-venv/bin/python scripts/sb3_cartpole.py --algo=dqn --seed=0
    /work/sb3-venv/bin/python scripts/sb3_cartpole.py --algo=ppo --seed=3

Runs with a separate virtual environment that holds stable-baselines3 and rl_zoo3 (the
project never imports either); `scripts/bench_cartpole.py --sb3_python=...` calls it per
seed next to the project's own run, on the same protocol:
- Hyperparameters: the CartPole-v1 entry of the installed rl_zoo3's hyperparams/<algo>.yml,
  read at run time (policy_kwargs, n_envs, `lin_` schedules as the Zoo's ExpManager makes
  them: `SimpleLinearSchedule`, i.e. initial value x progress remaining; an entry with
  `normalize` is refused, CartPole-v1's set none). The budget is the entry's
  n_timesteps (DQN 5e4, PPO 1e5), so SB3's schedules (epsilon, learning rate, clip range)
  follow the Zoo's exactly.
- Environments as the Zoo's `create_envs`: `make_vec_env` (DummyVecEnv, Monitor) seeded with
  the seed, and `set_random_seed(seed)`; the evaluation env is a separate CartPole-v1.
- Evaluation: 10 deterministic episodes (`evaluate_policy`) each time the total env steps
  (summed over copies, `model.num_timesteps`) cross a multiple of 1,000; training stops at
  the first mean >= 475.
- Threads: PyTorch's default (`torch.get_num_threads()`, printed), as the Zoo's train.py
  leaves it unless --num-threads is given; --torch_threads=n sets it as that flag does.
  On a shared 2-core machine with other busy processes, the default 2 OpenMP threads made
  one (256, 256) Adam step 39-158 ms instead of 2-4.5 ms with 1 thread, so comparisons
  there pass --torch_threads=1 (SB3's best case). device="cpu" (the Zoo's "auto" picks it
  without a GPU), verbose=0 (no console logger). Not reproduced: the Zoo's gym_patches
  TimeLimit (it differs only when an episode terminates on its 500th step).

Prints one JSON line: algo, seed, env_steps at the solving evaluation (null if the budget
ran out), seconds (from just before model construction to the end of that evaluation),
eval_seconds (time inside evaluations), best (highest evaluation mean), versions. The
caller measures process seconds (start to exit, including the torch import).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import gymnasium as gym
import stable_baselines3
import torch
import yaml
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import set_random_seed

ENV_ID = "CartPole-v1"
SOLVED = 475.0
EVAL_INTERVAL = 1_000  # env steps, summed over copies
EVAL_EPISODES = 10
ALGOS = {"dqn": DQN, "ppo": PPO}


def zoo_hyperparams(algo: str) -> tuple[dict, Path]:
  """The Zoo's CartPole-v1 entry, from the installed package's files (rl_zoo3 itself is not
  imported: its __init__ pulls in sb3_contrib and huggingface_hub, which this run never uses)."""
  spec = importlib.util.find_spec("rl_zoo3")
  path = Path(next(iter(spec.submodule_search_locations))) / "hyperparams" / f"{algo}.yml"
  return dict(yaml.safe_load(path.read_text())[ENV_ID]), path


class _Schedule:
  """rl_zoo3.utils.SimpleLinearSchedule: initial value x progress remaining (1 -> 0)."""

  def __init__(self, initial_value: float):
    self.initial_value = float(initial_value)

  def __call__(self, progress_remaining: float) -> float:
    return progress_remaining * self.initial_value


def model_kwargs(hyperparams: dict) -> tuple[dict, int, int, object]:
  """What ExpManager._preprocess_hyperparams makes of an entry: the model's kwargs, n_envs,
  n_timesteps and the `normalize` setting (False when absent)."""
  kwargs = dict(hyperparams)
  n_envs = int(kwargs.pop("n_envs", 1))
  n_timesteps = int(kwargs.pop("n_timesteps"))
  normalize = kwargs.pop("normalize", False)
  for key in ("learning_rate", "clip_range", "clip_range_vf"):
    if isinstance(kwargs.get(key), str):
      kind, value = kwargs[key].split("_")
      if kind != "lin":
        raise ValueError(f"unknown schedule {kwargs[key]!r}")
      kwargs[key] = _Schedule(float(value))
  if isinstance(kwargs.get("policy_kwargs"), str):
    kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"])  # the Zoo evals this string too
  if isinstance(kwargs.get("train_freq"), list):
    kwargs["train_freq"] = tuple(kwargs["train_freq"])
  unknown = set(kwargs) & {"env_wrapper", "vec_env_wrapper", "frame_stack", "callback", "monitor_kwargs"}
  if unknown:
    raise ValueError(f"entry uses Zoo features this script does not reproduce: {sorted(unknown)}")
  return kwargs, n_envs, n_timesteps, normalize


class SolveCallback(BaseCallback):
  """Evaluates whenever num_timesteps crosses a multiple of EVAL_INTERVAL; stops at SOLVED."""

  def __init__(self, eval_env, start: float):
    super().__init__()
    self.eval_env = eval_env
    self.start = start
    self.eval_seconds = 0.0
    self.last_eval_block = 0
    self.solved_at: tuple[int, float] | None = None
    self.best = float("-inf")

  def _on_step(self) -> bool:
    block = self.num_timesteps // EVAL_INTERVAL
    if block <= self.last_eval_block:
      return True
    self.last_eval_block = block
    t0 = time.perf_counter()
    mean, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=EVAL_EPISODES, deterministic=True)
    now = time.perf_counter()
    self.eval_seconds += now - t0
    self.best = max(self.best, float(mean))
    if mean >= SOLVED:
      self.solved_at = (self.num_timesteps, now - self.start)
      return False
    return True


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--algo", choices=sorted(ALGOS), required=True)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--torch_threads", type=int, default=0, help="torch.set_num_threads(n); 0: PyTorch's default, untouched"
  )
  args = parser.parse_args()

  if args.torch_threads > 0:  # the Zoo's train.py --num-threads does the same
    torch.set_num_threads(args.torch_threads)
  hyperparams, source = zoo_hyperparams(args.algo)
  kwargs, n_envs, n_timesteps, normalize = model_kwargs(hyperparams)
  if normalize:  # CartPole-v1's entries set none; VecNormalize would need its stats synced to eval
    raise ValueError(f"{source}: normalize={normalize!r} is not reproduced here")
  set_random_seed(args.seed)
  env = make_vec_env(ENV_ID, n_envs=n_envs, seed=args.seed)
  eval_env = make_vec_env(ENV_ID, n_envs=1, seed=args.seed)

  start = time.perf_counter()
  model = ALGOS[args.algo](env=env, seed=args.seed, verbose=0, device="cpu", **kwargs)
  callback = SolveCallback(eval_env, start)
  model.learn(total_timesteps=n_timesteps, callback=callback)
  end = time.perf_counter()
  solved = callback.solved_at
  print(
    json.dumps(
      {
        "algo": args.algo,
        "seed": args.seed,
        "env_steps": solved[0] if solved else None,
        "seconds": round(solved[1] if solved else end - start, 3),
        "eval_seconds": round(callback.eval_seconds, 3),
        "best": callback.best,
        "n_envs": n_envs,
        "budget": n_timesteps,
        "torch_threads": torch.get_num_threads(),
        "hyperparams": str(source),
        "versions": {
          "stable_baselines3": stable_baselines3.__version__,
          "rl_zoo3": (source.parent.parent / "version.txt").read_text().strip(),
          "torch": torch.__version__,
          "gymnasium": gym.__version__,
        },
      }
    )
  )


if __name__ == "__main__":
  main()
