"""What every command-line tool shares: quiet TensorFlow, gin parsing, one-line errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import logging  # noqa: E402

import gin  # noqa: E402


def quiet_libraries() -> None:
  """Keeps the terminal for our own output: no INFO logs, no deprecation chatter.

  tf-agents imports the old `gym` (a transitive dependency we never use), whose import
  prints an 'unmaintained' notice; gin logs an error for every search-path miss.
  """
  try:
    import gym_notices.notices

    gym_notices.notices.notices.clear()
  except ImportError:
    pass
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.ERROR)  # e.g. PolicySaver's "Sanitizing" warnings
  logging.getLogger().addFilter(lambda record: not record.getMessage().startswith("Path not found"))
  import tensorflow as tf

  tf.get_logger().setLevel(logging.ERROR)
  import warnings

  warnings.filterwarnings("ignore", category=UserWarning, module="tensorflow")
  warnings.filterwarnings("ignore", category=SyntaxWarning)


from pipelines.errors import PipelineError  # noqa: E402

GIN_DIR = Path(__file__).resolve().parent.parent / "gin"

# What gin and the pipeline raise for bad user input.
USER_ERRORS = (PipelineError, OSError, SyntaxError, ValueError, KeyError, TypeError)


def first_line(error: BaseException) -> str:
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0]


def parse_gin(files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses gin files and bindings; unknown names and syntax errors raise here."""
  for path in files:
    if not Path(path).is_file():
      raise PipelineError(f"gin file not found: {path}")
  for directory in {str(Path(p).resolve().parent) for p in files} | {str(GIN_DIR)}:
    gin.add_config_file_search_path(directory)
  try:
    gin.parse_config_files_and_bindings(files, bindings, finalize_config=True)
  except (SyntaxError, ValueError, KeyError, OSError) as e:
    raise PipelineError(f"bad gin config: {_gin_message(e)}") from None


def _gin_message(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
  where = next((line for line in lines if line.startswith("In file") or "line" in line), "")
  message = lines[0] if lines else type(error).__name__
  return f"{message} ({where.rstrip(':')})" if where and where != message else message


def main_with_errors(main: Callable[[], int | None], program: str) -> int:
  """Runs `main`; user errors become one line on stderr and exit code 2."""
  try:
    return main() or 0
  except USER_ERRORS as e:
    print(f"{program}: error: {first_line(e)}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:  # before the loop took over the signal: nothing to save yet
    print(f"{program}: interrupted", file=sys.stderr)
    return 130
