"""Kill soak: SIGKILL training runs at random moments and check that every resume is whole.

    nice -n 5 .venv/bin/python scripts/soak_kill.py --out=/tmp/soak       # ~35 min on 2 cores
    .venv/bin/python scripts/soak_kill.py --only=breakout --kills=2        # a quick look

Not a CI test. For each experiment (DQN CartPole: 20 kills; a toy DQN Breakout run with its
frame-store replay: 5 kills), uninterrupted runs with the same seed come first (`--references`,
default 2): they give the range of the final evaluation and the start-up time S (until
their first metrics record). Then one run is launched, killed with SIGKILL at a moment drawn
uniformly from [0, 2 S] s after the launch (about half the kills land while it starts and
restores, half while it trains, evaluates, checkpoints or exports) and launched again with the
same command, `--kills` times; the last launch runs to the end. Checked:

- every launch ends by the kill or with exit 0, without a traceback, an error line or a
  checkpoint reported as not loading (a kill must never damage one);
- each launch that gets as far resumes from the newest complete checkpoint on disk after the
  kill before it (`ckpt-<N>.index`, written last), so no checkpoint is lost and the resume
  points never go backwards; with the frame store, the replay is restored before it resumes;
- at the end, `metrics.jsonl`'s env steps strictly increase, and the run took the gradient
  steps an uninterrupted run takes for its env steps: a replay restored empty or from another
  checkpoint than the agent (a half-loaded checkpoint) would collect its random start again;
- the final evaluation lies within the episode returns of the reference runs' evaluations
  over the last 10% of the budget (DQN on CartPole swings between evaluations).

Each launch is printed when it ends (when it was killed, what it was doing, what it resumed
from), then a summary per experiment; `<out>/summary.json` holds every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT = re.compile(r"ckpt-(\d+)\.index")
RESUMED = re.compile(r"Resuming .* at (\d+) env steps")
FINAL = re.compile(r"Final evaluation: (\{.*\})")
LAST_PART = 0.1  # of the budget: the reference evaluations that give the range


@dataclasses.dataclass
class Experiment:
  name: str
  gin_file: str
  bindings: list[str]
  budget: int  # env steps
  kills: int
  references: int
  random_steps: int  # OffPolicyTrainer.initial_collect_steps: env steps without training
  train_per_env_step: float  # gradient steps per env step after them
  side_files: bool  # the replay is checkpointed beside the TF checkpoint

  def command(self, root: Path) -> list[str]:
    bindings = [*self.bindings, f"run_experiment.num_env_steps = {self.budget}"]
    flags = [f"--gin_file={self.gin_file}", f"--root_dir={root}", *(f"--gin_bindings={b}" for b in bindings)]
    return [sys.executable, "-m", "pipelines.train", *flags]


EXPERIMENTS = {
  # The gin file's DQN and budget without its early stop at 475 (every run ends at the same
  # env steps), a checkpoint every 1k env steps instead of 10k (kills resume from many).
  "cartpole": Experiment(
    name="cartpole",
    gin_file="gin/dqn_cartpole.gin",
    bindings=["run_experiment.target_return = None", "run_experiment.checkpoint_interval = 1_000"],
    budget=100_000,
    kills=20,
    references=2,
    random_steps=1_000,
    train_per_env_step=4 / 8,
    side_files=False,  # the uniform replay is TF variables, inside the TF checkpoint
  ),
  # tests/envs/test_atari.py's toy Breakout (Nature DQN, frame-store replay), a little longer:
  # minutes, not the gin file's days; its evaluation is of a policy that has barely learned.
  "breakout": Experiment(
    name="breakout",
    gin_file="gin/dqn_breakout_nature.gin",
    bindings=[
      "run_experiment.eval_interval = 1_000",
      "run_experiment.log_interval = 100",
      "run_experiment.checkpoint_interval = 100",
      "run_experiment.policy_export_interval = 500",
      "OffPolicyTrainer.initial_collect_steps = 100",
      "Evaluator.num_episodes = 10",  # a range of a barely trained policy needs a few games
      "eval/make_environment.num_envs = 2",
      "eval/AtariProtocol.max_episode_frames = 2_000",
      "frame_stack_replay.capacity = 2_000",
    ],
    budget=3_000,
    kills=5,
    references=2,
    random_steps=100,
    train_per_env_step=1 / 4,
    side_files=True,
  ),
}


def launch(experiment: Experiment, root: Path, log: Path) -> subprocess.Popen:
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  with open(log, "w") as out:  # the child keeps its own descriptor
    # A process group of its own: the kill reaches environment workers too, if any.
    return subprocess.Popen(
      experiment.command(root), cwd=REPO, env=env, stdout=out, stderr=out, start_new_session=True
    )


def checkpoints_on_disk(root: Path) -> list[int]:
  """Numbers (env steps) of the complete checkpoints: TensorFlow writes the index last."""
  folder = root / "checkpoints"
  if not folder.is_dir():
    return []
  return sorted(int(m.group(1)) for p in folder.iterdir() if (m := CHECKPOINT.fullmatch(p.name)))


def records(root: Path, name: str = "metrics.jsonl") -> list[dict]:
  path = root / name
  lines = path.read_text().splitlines() if path.exists() else []
  parsed = []
  for line in lines:
    try:
      parsed.append(json.loads(line))
    except json.JSONDecodeError:  # a line cut short by the kill (dropped on resume)
      pass
  return parsed


def last_output(text: str) -> str:
  """The launch's last line of its own (not TensorFlow's C++ logging): what it was doing."""
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  own = [line for line in lines if not re.match(r"(\d{4}-\d\d-\d\d |[IWE]\d{4} |WARNING: All log)", line)]
  return (own or ["(nothing yet)"])[-1][:80]


def final_evaluation(text: str) -> dict | None:
  match = FINAL.search(text)
  return json.loads(match.group(1)) if match else None


def run_reference(experiment: Experiment, root: Path) -> dict:
  """One uninterrupted run: its final evaluation, the episode returns of its evaluations in
  the last 10% of the budget, and its start-up time (until its first metrics record)."""
  log = root.with_suffix(".log")
  start = time.monotonic()
  process = launch(experiment, root, log)
  startup = None
  while process.poll() is None:
    if startup is None and (records(root) or records(root, "train_metrics.jsonl")):
      startup = time.monotonic() - start
    time.sleep(0.5)
  seconds = time.monotonic() - start
  final = final_evaluation(log.read_text(errors="replace"))
  if process.returncode != 0 or final is None or startup is None:
    raise SystemExit(f"soak_kill: reference run {root} failed (exit {process.returncode}); see {log}")
  late = [r for r in records(root) if r["env_steps"] >= (1 - LAST_PART) * experiment.budget]
  reference = {
    "final": final,
    "seconds": round(seconds, 1),
    "startup_seconds": round(startup, 1),
    "late_means": [r["average_return"] for r in late],
    "late_range": [min(r["min_return"] for r in late), max(r["max_return"] for r in late)],
  }
  print(
    f"[{experiment.name}] reference {root.name}: {seconds:.0f} s (first record after {startup:.0f} s), "
    f"final evaluation {final['average_return']:.1f} (episodes {final['min_return']:.0f}.."
    f"{final['max_return']:.0f}) at {final['env_steps']} env steps, {final['train_steps']} gradient steps; "
    f"last {LAST_PART:.0%}: means {reference['late_means']}, episodes {reference['late_range']}",
    flush=True,
  )
  return reference


def one_launch(
  experiment: Experiment,
  root: Path,
  log: Path,
  kill_after: float | None,
  expected: int | None,
  earlier: list[int],
) -> dict:
  """Launches the run, kills it after `kill_after` s (None: lets it finish), checks what it
  did with the checkpoints it found: `expected` is the newest complete one (None: none)."""
  start, started = time.monotonic(), time.time()
  process = launch(experiment, root, log)
  try:
    code, killed = process.wait(timeout=kill_after), False
  except subprocess.TimeoutExpired:
    with contextlib.suppress(ProcessLookupError):  # it may have ended just now
      os.killpg(process.pid, signal.SIGKILL)
    code = process.wait()
    killed = code == -signal.SIGKILL
  ended = time.time()
  text = log.read_text(errors="replace")
  resumed = [int(m) for m in RESUMED.findall(text)]
  on_disk = checkpoints_on_disk(root)
  # Work the kill threw away: everything since the newest checkpoint (or since the launch).
  if on_disk:
    newest = (root / "checkpoints" / f"ckpt-{on_disk[-1]}.index").stat().st_mtime
    started = max(started, newest)
  record = {
    "seconds": round(time.monotonic() - start, 1),
    "killed": killed,
    "exit": code,
    "newest_checkpoint": expected,
    "resumed_at": resumed[0] if resumed else None,
    "last_output": last_output(text),
    "seconds_lost": round(ended - started, 1) if killed else None,
    "checkpoints_after": on_disk,
  }
  bad = [
    line.strip()[:200]
    for line in text.splitlines()
    if line.startswith("Traceback") or "error:" in line or line.startswith("warning: checkpoint")
  ]
  if resumed and resumed[0] != expected:
    bad.append(f"resumed at {resumed[0]}, but the newest complete checkpoint was {expected}")
  if resumed and resumed[0] < max(earlier, default=0):
    bad.append(f"env steps went backwards: resumed at {resumed[0]} after {max(earlier)}")
  if (
    resumed and experiment.side_files and not 0 <= text.find("Restored replay_buffer") < text.find("Resuming")
  ):
    bad.append("resumed without restoring its replay first")
  if not killed and (code != 0 or (expected is not None and not resumed)):
    bad.append(f"exit {code}" + ("" if resumed or expected is None else ", started afresh"))
  record["problems"] = bad
  return record


def soak(experiment: Experiment, out: Path, kills: int, references: int, rng: random.Random) -> dict:
  folder = out / experiment.name
  folder.mkdir(parents=True, exist_ok=True)
  refs = [run_reference(experiment, folder / f"reference-{i}") for i in range(references)]
  max_delay = 2 * statistics.median(r["startup_seconds"] for r in refs)
  print(f"[{experiment.name}] kill moments: uniform in [0, {max_delay:.0f}] s after each launch", flush=True)
  root = folder / "killed"
  launches: list[dict] = []
  while True:
    kill_after = rng.uniform(0, max_delay) if len(launches) < kills else None
    newest = launches[-1]["checkpoints_after"][-1:] if launches else []
    earlier = [r["resumed_at"] for r in launches if r["resumed_at"] is not None]
    log = folder / f"killed-launch-{len(launches):02d}.log"
    record = one_launch(experiment, root, log, kill_after, newest[0] if newest else None, earlier)
    launches.append(record)
    if record["resumed_at"] is not None:
      resume = f"resumed at {record['resumed_at']}"
    else:
      resume = "fresh start" if not newest else "killed before resuming"
    ended = f"exit {record['exit']}"
    if record["killed"]:
      ended = f"SIGKILL at {record['seconds']:4.1f} s ({record['seconds_lost']:4.1f} s of work lost)"
    print(
      f"[{experiment.name}] launch {len(launches) - 1:2d}: {resume:<22} (newest complete checkpoint: "
      f"{newest[0] if newest else None}) | {ended}, during {record['last_output']!r} | complete "
      f"checkpoints then: {record['checkpoints_after'][-2:]}"
      + (f" | PROBLEMS: {record['problems']}" if record["problems"] else ""),
      flush=True,
    )
    if not record["killed"]:
      break
  summary = summarise(experiment, launches, refs, final_evaluation(log.read_text(errors="replace")), root)
  summary["max_delay"] = round(max_delay, 1)
  if sum(r["killed"] for r in launches) < kills:
    summary["failures"].append(f"the run finished before all {kills} kills: raise the experiment's budget")
  return summary


def summarise(experiment: Experiment, launches: list[dict], refs: list[dict], final: dict | None, root: Path):
  failures = [f"launch {i}: {p}" for i, r in enumerate(launches) for p in r["problems"]]
  steps = [r["env_steps"] for r in records(root)]
  if steps != sorted(set(steps)):
    failures.append("metrics.jsonl's env steps do not strictly increase")
  summary = {"launches": launches, "references": refs, "final": final, "failures": failures}
  if final is None:
    failures.append("the last launch printed no final evaluation")
    return summary
  # A replay restored empty (or from another checkpoint than the agent's) collects its random
  # start again: that many env steps without gradient steps.
  owed = (final["env_steps"] - experiment.random_steps) * experiment.train_per_env_step
  deficit = owed - final["train_steps"]
  if deficit >= experiment.random_steps * experiment.train_per_env_step / 2:
    failures.append(f"{deficit:.0f} gradient steps short of an uninterrupted run: a replay was not restored")
  low = min(r["late_range"][0] for r in refs)
  high = max(r["late_range"][1] for r in refs)
  within = low <= final["average_return"] <= high
  if not within:
    failures.append(f"final evaluation {final['average_return']:.1f} outside the references' [{low}, {high}]")
  kills = [r for r in launches if r["killed"]]
  resumes = [r for r in launches if r["resumed_at"] is not None]
  faithful = sum(not any(p.startswith("resumed at") for p in r["problems"]) for r in resumes)
  before_resuming = sum(r["resumed_at"] is None and r["newest_checkpoint"] is not None for r in kills)
  lost = [r["seconds_lost"] for r in kills]
  summary.update(gradient_step_deficit=deficit, reference_range=[low, high], within_range=within)
  means = ", ".join(f"{r['final']['average_return']:.1f}" for r in refs)
  median = statistics.median(lost) if lost else "-"
  print(
    f"[{experiment.name}] SUMMARY: {len(kills)} kills over {len(launches)} launches; {len(resumes)} resumed, "
    f"{faithful} of them from the newest complete checkpoint; {before_resuming} killed before resuming; "
    f"work lost per kill (s since the newest checkpoint or the launch): median {median}, "
    f"max {max(lost, default='-')}; {final['train_steps']} gradient steps for {final['env_steps']} env "
    f"steps ({deficit:+.1f} short of an uninterrupted run); final evaluation {final['average_return']:.1f}, "
    f"references' last {LAST_PART:.0%} episodes [{low:.0f}, {high:.0f}] (final means {means}): "
    f"{'within' if within else 'OUTSIDE'}; "
    f"{len(failures)} failures" + (f": {failures}" if failures else ""),
    flush=True,
  )
  return summary


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=Path, help="folder for the runs and logs (default: a new one in /tmp)")
  parser.add_argument("--only", choices=sorted(EXPERIMENTS), help="one experiment only")
  parser.add_argument("--kills", type=int, help="kills per experiment (default: 20 CartPole, 5 Breakout)")
  parser.add_argument("--references", type=int, help="uninterrupted runs per experiment (default: 2)")
  parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
  args = parser.parse_args()
  if args.references is not None and args.references < 1:
    parser.error("--references must be at least 1: they give the range of the final evaluation")
  out = args.out or Path(tempfile.mkdtemp(prefix="soak_kill-"))
  if out.exists() and any(out.iterdir()):
    parser.error(f"--out {out} is not empty; the soak needs fresh run folders")
  out.mkdir(parents=True, exist_ok=True)
  print(f"soak_kill: runs and logs in {out}", flush=True)
  rng = random.Random(args.seed)
  summaries = {}
  for name, experiment in EXPERIMENTS.items():
    if args.only in (None, name):
      kills, references = args.kills or experiment.kills, args.references or experiment.references
      summaries[name] = soak(experiment, out, kills, references, rng)
  (out / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
  failed = sum(len(s["failures"]) for s in summaries.values())
  verdict = f"{failed} failures" if failed else "all checks passed"
  print(f"soak_kill: {verdict}; every launch and figure in {out / 'summary.json'}", flush=True)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
