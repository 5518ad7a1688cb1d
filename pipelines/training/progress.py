"""Training progress: a tqdm bar on a terminal, a plain line every N seconds in a log.

    nohup pipelines-train --gin_file=gin/dqn_breakout_nature.gin --root_dir=runs/breakout &
    tail -f nohup.out   # progress: 120,000/10,000,000 env steps (480,000 frames) 1.2%, ...

tqdm turns itself off when stderr is not a terminal (`disable=None`), and a bar redrawn with
carriage returns would be one endless line in a file anyway, so under `nohup`, in CI or in a
sweep child's `logs/<run>.log` this writes whole lines instead: env steps (and frames), steps/s
since the previous line, train steps, the last evaluation and the ETA to the budget.
`run_experiment.progress_interval` sets the seconds between lines (0: none).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import tqdm


def duration(seconds: float) -> str:
  """'3d 15h', '2h 05m', '4m 10s', '12s': the two largest units (tqdm's [H:]MM:SS has no days)."""
  seconds = int(round(seconds))
  days, rest = divmod(seconds, 86_400)
  hours, rest = divmod(rest, 3_600)
  minutes, secs = divmod(rest, 60)
  if days:
    return f"{days}d {hours}h"
  if hours:
    return f"{hours}h {minutes:02d}m"
  if minutes:
    return f"{minutes}m {secs:02d}s"
  return f"{secs}s"


class Progress:
  """Reports a run's env steps: `update` after every chunk of training, inside `with`.

  On a terminal (`stream.isatty()`, tqdm's own test) it is tqdm's bar, the last evaluation
  return as its postfix. Elsewhere it writes one `progress:` line at the first update (so a
  log says where a run started or resumed) and then at the first update at least `interval`
  seconds after the previous line; never more often, however short the chunks.

  total: the budget in env steps; initial: env steps already taken (a resumed run).
  frames_per_env_step: emulator frames per env step (Atari: 4), for a frames count; None: none.
  interval: seconds between lines; 0: no lines. clock: seconds (tests pass a fake one).
  """

  def __init__(
    self,
    total: int,
    initial: int = 0,
    frames_per_env_step: int | None = None,
    interval: float = 60.0,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
  ):
    self.total = total
    self.frames_per_env_step = frames_per_env_step
    self.interval = interval
    self.stream = stream if stream is not None else sys.stderr  # looked up now: redirects apply
    self.clock = clock
    self.bar = None
    if self.stream.isatty():
      self.bar = tqdm.tqdm(total=total, initial=initial, unit="step", file=self.stream, dynamic_ncols=True)
    self._steps = initial
    self._eval_at: int | None = None  # env steps of the evaluation the bar's postfix shows
    # (env steps, clock) at the previous line, or at the start until the first line.
    self._mark = (initial, clock())
    self._written = False

  def __enter__(self) -> Progress:
    return self

  def __exit__(self, *exc) -> None:
    if self.bar is not None:
      self.bar.close()

  def update(self, env_steps: int, train_steps: int, last_eval: dict[str, Any] | None) -> None:
    """After a chunk: env steps and train steps now; last_eval: the latest metrics.jsonl record."""
    now = self.clock()
    if self.bar is not None:
      self.bar.update(env_steps - self._steps)
      if last_eval is not None and last_eval["env_steps"] != self._eval_at:
        self._eval_at = last_eval["env_steps"]
        self.bar.set_postfix(eval_return=f"{last_eval['average_return']:.1f}")
    self._steps = env_steps
    steps, since = self._mark
    if self.bar is not None or self.interval <= 0 or (self._written and now - since < self.interval):
      return
    rate = (env_steps - steps) / (now - since) if now > since else 0.0
    print(self.line(env_steps, train_steps, last_eval, rate), file=self.stream, flush=True)
    self._mark = (env_steps, now)
    self._written = True

  def line(self, env_steps: int, train_steps: int, last_eval: dict[str, Any] | None, rate: float) -> str:
    """`progress: 120,000/10,000,000 env steps (480,000 frames) 1.2%, 31.5 steps/s, train step
    25,000, last eval 4.2 at 100,000, ETA 3d 15h` (rate: env steps per second)."""
    frames = f" ({env_steps * self.frames_per_env_step:,} frames)" if self.frames_per_env_step else ""
    percent = 100 * env_steps / self.total if self.total else 100.0
    evaluation = "no eval yet"
    if last_eval is not None:
      evaluation = f"last eval {last_eval['average_return']:.1f} at {last_eval['env_steps']:,}"
    remaining = max(self.total - env_steps, 0)
    eta = duration(remaining / rate) if rate > 0 else ("0s" if not remaining else "unknown")
    return (
      f"progress: {env_steps:,}/{self.total:,} env steps{frames} {percent:.1f}%, {rate:,.1f} steps/s, "
      f"train step {train_steps:,}, {evaluation}, ETA {eta}"
    )
