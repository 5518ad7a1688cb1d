"""pipelines/signals.py: SIGINT/SIGTERM become a flag, and the old handlers come back.

pytest tests/test_signals.py
"""

import os
import signal

import pytest

from pipelines import signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_sets_the_flag_instead_of_raising(sig):
  with signals.StopSignals() as stop:
    assert stop.received is None
    os.kill(os.getpid(), sig)  # delivered to this (main) thread before kill returns
    assert stop.received == sig
  assert stop.exit_code == 128 + sig


def test_the_previous_handlers_are_back_afterwards():
  seen = []
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
  # Whatever SIGINT was: Python's default_int_handler, or SIG_IGN in a job started with `&`.
  sigint_before = signal.getsignal(signal.SIGINT)
  try:
    stop = signals.StopSignals().install()
    os.kill(os.getpid(), signal.SIGTERM)
    stop.restore()
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.received == signal.SIGTERM and seen == [signal.SIGTERM]  # once each, in turn
    assert signal.getsignal(signal.SIGINT) == sigint_before
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_a_waiting_line_is_said_at_once_then_at_most_every_interval(capsys):
  now = [100.0]
  line = signals.WaitingLine("learner: waiting", every=10, clock=lambda: now[0])
  for t in (100.0, 105.0, 109.9, 110.0, 115.0, 121.0):
    now[0] = t
    line.tick()
  assert capsys.readouterr().out.splitlines() == ["learner: waiting"] * 3  # at 100, 110, 121
  once = signals.WaitingLine("eval: waiting", clock=lambda: now[0])
  for t in (0.0, 1e6):
    now[0] = t
    once.tick()
  once.done()  # a new wait is said again
  once.tick()
  assert capsys.readouterr().out.splitlines() == ["eval: waiting"] * 2
