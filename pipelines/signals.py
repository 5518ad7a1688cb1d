"""What long-running loops share: stop signals, and "waiting for ..." lines that do not flood a log.

Stop signals: SIGINT and SIGTERM turned into a flag that a loop checks between units of work.

    with signals.StopSignals() as stop:
      while stop.received is None:
        ...  # one graph call, one poll of child processes, one flush
    if stop.received is not None:
      return stop.exit_code  # 128 + the signal, the shell's convention

Every long-running command (training, each distributed role, the launcher, sweeps and
tuning) stops this way: the work in hand finishes (a checkpoint, a child's clean stop) and
the handlers that were there before are put back on the way out.

    waiting = signals.WaitingLine("learner: waiting for experience from actors", every=10)
    while not ready():
      waiting.tick()  # the first call says it, later ones at most every 10 s
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
  """SIGINT/SIGTERM set `received` (the signal number) instead of raising."""

  def __init__(self):
    self.received: int | None = None
    self._previous: dict = {}

  def install(self) -> StopSignals:
    for sig in STOP_SIGNALS:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def restore(self) -> None:
    """Puts back the handlers that were there before `install`."""
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def __enter__(self) -> StopSignals:
    return self.install()

  def _handle(self, signum, frame) -> None:
    self.received = signum

  def __exit__(self, *exc) -> None:
    self.restore()

  @property
  def exit_code(self) -> int:
    return 128 + (self.received or 0)


class WaitingLine:
  """Prints `text` at the first `tick()` of a wait, then at most every `every` seconds while
  the wait lasts (None: only once); `done()` ends the wait, so the next one is said again."""

  def __init__(self, text: str, every: float | None = None, clock: Callable[[], float] = time.monotonic):
    self.text = text
    self.every = math.inf if every is None else every
    self.clock = clock
    self._said: float | None = None

  def tick(self) -> None:
    now = self.clock()
    if self._said is None or now - self._said >= self.every:
      print(self.text, flush=True)
      self._said = now

  def done(self) -> None:
    self._said = None
