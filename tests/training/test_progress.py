"""Progress reports: `progress:` lines in a log (not a terminal), tqdm's bar on a terminal.

Time is a fake clock: each reading is a fixed number of seconds after the previous one, so
the lines, their rates and ETAs do not depend on how fast this machine is.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import re
import signal

import pytest

from pipelines.training import progress

from conftest import train_here

LINE = re.compile(
  r"progress: (?P<steps>[\d,]+)/(?P<total>[\d,]+) env steps (?:\((?P<frames>[\d,]+) frames\) )?[\d.]+%, "
  r"(?P<rate>[\d,.]+) steps/s, train step (?P<train>[\d,]+), "
  r"(?:last eval (?P<eval_return>-?[\d.]+) at (?P<eval_steps>[\d,]+)|no eval yet), ETA (?P<eta>.+)"
)


def ticking(seconds: float):
  """A clock that moves `seconds` forward at each reading."""
  ticks = itertools.count(0.0, seconds)
  return lambda: next(ticks)


def parsed(text: str) -> list[dict]:
  lines = [line for line in text.splitlines() if line.startswith("progress:")]
  matches = [LINE.fullmatch(line) for line in lines]
  assert all(matches), lines
  return [m.groupdict() for m in matches]


def number(text: str) -> float:
  return float(text.replace(",", ""))


class Terminal(io.StringIO):
  def isatty(self) -> bool:
    return True


def test_a_line_has_every_field_and_an_eta_in_days():
  """The issue's own example: a resumed Atari run (4 frames per env step), 31.5 steps/s."""
  stream = io.StringIO()
  clock = iter([0.0, 10.0, 40.0, 70.0]).__next__
  with progress.Progress(10_000_000, 100_000, 4, interval=60, stream=stream, clock=clock) as shown:
    shown.update(118_110, 24_500, None)  # the first chunk: a line, whatever the interval
    shown.update(119_000, 24_700, None)  # 30 s later: too soon
    shown.update(120_000, 25_000, {"env_steps": 100_000, "average_return": 4.2})  # 60 s later
  assert stream.getvalue().splitlines() == [
    "progress: 118,110/10,000,000 env steps (472,440 frames) 1.2%, 1,811.0 steps/s, train step 24,500, "
    "no eval yet, ETA 1h 30m",
    "progress: 120,000/10,000,000 env steps (480,000 frames) 1.2%, 31.5 steps/s, train step 25,000, "
    "last eval 4.2 at 100,000, ETA 3d 15h",
  ]


def test_lines_are_never_more_often_than_the_interval():
  """Short chunks (one every 7 s) with a 60 s interval: a line at the first, then every 63 s."""
  stream = io.StringIO()
  with progress.Progress(100_000, 0, interval=60, stream=stream, clock=ticking(7.0)) as shown:
    for chunk in range(1, 41):  # the readings after the start: 7 s, 14 s, ... 280 s
      shown.update(chunk * 70, chunk * 10, None)
  lines = parsed(stream.getvalue())
  # Readings at 7 s (the first), then the first >= 60 s after each line: 70 s, 133 s, 196 s, 259 s.
  assert [number(line["steps"]) for line in lines] == [70, 700, 1_330, 1_960, 2_590]
  assert {number(line["rate"]) for line in lines} == {10.0}  # 70 env steps per 7 s


def test_interval_zero_writes_no_lines():
  stream = io.StringIO()
  with progress.Progress(1_000, 0, interval=0, stream=stream, clock=ticking(100.0)) as shown:
    for steps in (100, 200, 300):
      shown.update(steps, steps, None)
  assert stream.getvalue() == ""


def test_a_terminal_gets_the_bar_and_no_lines():
  stream = Terminal()
  with progress.Progress(1_000, 0, interval=60, stream=stream, clock=ticking(100.0)) as shown:
    for steps in (100, 200, 300):
      shown.update(steps, steps, {"env_steps": steps, "average_return": 12.5})
  written = stream.getvalue()
  assert "progress:" not in written
  assert "300/1000" in written and "eval_return=12.5" in written, written  # tqdm's bar and postfix


def test_duration():
  assert [progress.duration(s) for s in (0, 12.4, 250, 7_500, 313_650)] == [
    "0s",
    "12s",
    "4m 10s",
    "2h 05m",
    "3d 15h",
  ]


@pytest.fixture
def fake_clock(monkeypatch):
  """The loop's Progress writes to a buffer of the test's own (kept even when the run exits by
  a signal) and reads a clock that moves 30 s per reading; returns the buffer."""
  stream = io.StringIO()
  monkeypatch.setattr(
    progress, "Progress", functools.partial(progress.Progress, stream=stream, clock=ticking(30.0))
  )
  return stream


def test_a_logged_run_reports_what_metrics_jsonl_records(tmp_path, fake_clock):
  """Every chunk is 30 s of the fake clock, so with a 30 s interval each chunk writes a line:
  each names the latest evaluation of metrics.jsonl, and a line at an evaluation point carries
  that evaluation's return, env and train steps."""
  root = tmp_path / "run"
  result = train_here(root, bindings=["run_experiment.progress_interval = 30"])
  assert result.returncode == 0, result.stderr[-3000:]
  lines = parsed(fake_clock.getvalue())
  records = {r["env_steps"]: r for r in map(json.loads, (root / "metrics.jsonl").read_text().splitlines())}
  by_steps = {number(line["steps"]): line for line in lines}
  assert len(by_steps) == len(lines) >= 3
  for steps, line in by_steps.items():
    if line["eval_steps"] is None:
      assert not [at for at in records if at < steps], (line, records)
      continue
    named = records[number(line["eval_steps"])]
    assert line["eval_return"] == f"{named['average_return']:.1f}"
    assert not [at for at in records if named["env_steps"] < at < steps], (line, records)
  # The last record may be the final evaluation, made after the last chunk's line.
  evaluated = [r for r in list(records.values())[:-1] if r["env_steps"] in by_steps]
  assert len(evaluated) >= 2, (records, lines)
  for record in evaluated:
    line = by_steps[record["env_steps"]]
    assert number(line["train"]) == record["train_steps"]
    assert number(line["eval_steps"]) == record["env_steps"]
  for before, after in itertools.pairwise(lines):  # env steps gained per 30 s, and the ETA they give
    rate = (number(after["steps"]) - number(before["steps"])) / 30
    assert number(after["rate"]) == pytest.approx(rate, abs=0.05)
    assert after["eta"] == progress.duration(max(400 - number(after["steps"]), 0) / rate)
  assert all(number(line["total"]) == 400 and line["frames"] is None for line in lines)


def test_a_resumed_run_says_at_once_where_it_resumed(tmp_path, monkeypatch):
  """A run stopped by SIGTERM, then resumed: the resume's first chunk writes a line at once,
  though the interval (1 h) has not passed, with the rate since the resume point."""
  root = tmp_path / "run"
  readings = itertools.count()

  def clock():  # 10 s per reading; SIGTERM at the second chunk of the first run
    if next(readings) == 2:
      signal.raise_signal(signal.SIGTERM)
    return 10.0 * next(ticks)

  ticks = itertools.count()
  first = io.StringIO()
  monkeypatch.setattr(progress, "Progress", functools.partial(progress.Progress, stream=first, clock=clock))
  with pytest.raises(SystemExit):
    train_here(root, bindings=["run_experiment.progress_interval = 3600"])
  assert len(parsed(first.getvalue())) == 1  # the first chunk's line only: 1 h has not passed

  second = io.StringIO()
  ticks = itertools.count()
  monkeypatch.setattr(progress, "Progress", functools.partial(progress.Progress, stream=second, clock=clock))
  result = train_here(root, bindings=["run_experiment.progress_interval = 3600"])
  assert result.returncode == 0, result.stderr[-3000:]
  resumed_at = int(re.search(r"Resuming \S+ at (\d+) env steps", result.stderr).group(1))
  (line,) = parsed(second.getvalue())
  steps = number(line["steps"])
  assert resumed_at < steps <= 400
  assert number(line["rate"]) == pytest.approx((steps - resumed_at) / 10, abs=0.05)
