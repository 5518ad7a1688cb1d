"""What every command-line tool shares: quiet TensorFlow, gin parsing, one-line errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import atexit  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import tokenize  # noqa: E402

import gin  # noqa: E402
from gin import config_parser  # noqa: E402


def quiet_libraries() -> None:
  """Keeps the terminal for our own output: no INFO logs, no deprecation chatter.

  tf-agents imports the old `gym` (a transitive dependency we never use), whose import
  prints an 'unmaintained' notice unless this runs first; gin logs an error for every
  search-path miss.
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
# What gin raises for a bad file or binding: syntax (tokenize's TokenError for an unclosed
# bracket or quote), unknown names and values, a missing include, a failed `import`.
_GIN_ERRORS = (SyntaxError, tokenize.TokenError, ValueError, KeyError, TypeError, OSError, ImportError)


def first_line(error: BaseException) -> str:
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0]


def check_gin_syntax(files: Sequence[str], bindings: Sequence[str]) -> None:
  """Refuses a missing gin file or a binding that does not parse, naming it and its position.

  Needs no configurable registered (nor TensorFlow imported), so `pipelines-train` runs it
  first and a typo costs well under a second.
  """
  for path in files:
    if not Path(path).is_file():
      raise PipelineError(f"gin file not found: {path}")
  for number, binding in enumerate(bindings, 1):
    try:
      for _ in config_parser.ConfigParser(binding, _SyntaxOnly()):
        pass
    except (SyntaxError, tokenize.TokenError) as e:
      raise PipelineError(f"bad gin binding #{number} {binding!r}: {_gin_reason(e)}") from None


def parse_gin(files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses gin files, then each binding on its own (later ones win), then finalizes.

  An error names the gin file and line, or the binding and its position among the
  --gin_bindings (#1 is the first), e.g. `bad gin binding #2 'run_experiment.==':
  Malformatted scope or selector`.
  """
  check_gin_syntax(files, bindings)
  for directory in {str(Path(p).resolve().parent) for p in files} | {str(GIN_DIR)}:
    gin.add_config_file_search_path(directory)
  for path in files:
    try:
      gin.parse_config_file(path)
    except _GIN_ERRORS as e:
      raise PipelineError(f"bad gin config in {_gin_where(e, path)}: {_gin_reason(e)}") from None
  for number, binding in enumerate(bindings, 1):
    try:
      gin.parse_config(binding)
    except _GIN_ERRORS as e:
      raise PipelineError(f"bad gin binding #{number} {binding!r}: {_gin_reason(e)}") from None
  try:
    gin.finalize()
  except _GIN_ERRORS as e:
    raise PipelineError(f"bad gin config: {_finalize_reason(e, bindings)}") from None


class _SyntaxOnly(config_parser.ParserDelegate):
  """Parses references and macros without looking them up (nothing is registered yet)."""

  def configurable_reference(self, scoped_name, evaluate):
    return None

  def macro(self, name):
    return None


def _gin_reason(error: BaseException) -> str:
  """The message of a gin error without gin's location lines (the caller names the place)."""
  if isinstance(error, tokenize.TokenError):
    return "unclosed bracket or quote"
  text = error.msg if isinstance(error, SyntaxError) and error.msg else str(error)
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  lines = [line for line in lines if not line.startswith("In ")] or [type(error).__name__]
  # A bad literal reads "malformed node or string ... <ast.Name ...>" then "Failed to parse token 'x'".
  reason = lines[-1] if "<ast." in lines[0] else lines[0]
  return reason.split(". Searched config paths")[0].rstrip(".")


def _gin_where(error: BaseException, path: str) -> str:
  """`file, line N` of a gin error, the innermost file first (gin lists includes inside out)."""
  if isinstance(error, SyntaxError) and error.filename:
    return f"{error.filename}, line {error.lineno}"
  found = [f"{file}, line {line}" for file, line in re.findall(r'In file "([^"]+)", line (\d+)', str(error))]
  if not found:
    return path
  return found[0] + (f" (included from {found[1]})" if len(found) > 1 else "")


def _finalize_reason(error: BaseException, bindings: Sequence[str]) -> str:
  # gin names an undefined macro 'NAME/gin.macro' and appends the whole operative config.
  macro = re.match(r"No bindings specified for '(?:.*/)?([^/']+)/gin.macro'", str(error))
  if not macro:
    return _gin_reason(error)
  name = macro.group(1)
  users = [f"#{n} {b!r}" for n, b in enumerate(bindings, 1) if re.search(rf"%{name}\b", b)]
  return f"macro %{name} is used but never defined" + (f" (binding {users[0]})" if users else "")


def main_with_errors(main: Callable[[], int | None], program: str) -> int:
  """Runs `main`; user errors become one line on stderr and exit code 2 (write errors: 74)."""
  try:
    return main() or 0
  except USER_ERRORS as e:
    print(f"{program}: error: {first_line(e)}", file=sys.stderr)
    return e.exit_code if isinstance(e, PipelineError) else 2
  except KeyboardInterrupt:  # before the loop took over the signal: nothing to save yet
    print(f"{program}: interrupted", file=sys.stderr)
    return 130


def exit_process(code: int) -> None:
  """Ends a command-line process with `code`, skipping TensorFlow's slow teardown.

  After `main` returned, a process that loaded TensorFlow spends 3-8 s (more on a loaded
  machine) freeing its module graph and C++ state, time every relaunch, test and sweep child
  pays for nothing: everything the run keeps is already on disk (checkpoints and exports
  are written whole, metrics lines fsync'd, summary writers flushed at the end of the run).
  So: the exit handlers run as on a normal exit (logging, multiprocessing's children,
  temporary folders registered with `weakref.finalize`), the streams are flushed, then
  `os._exit`. Without TensorFlow loaded it is a plain `sys.exit`.
  """
  if "tensorflow" not in sys.modules:
    sys.exit(code)
  atexit._run_exitfuncs()  # what interpreter shutdown would run first; not the module teardown
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):  # a closed pipe: nothing more to say
      pass
  os._exit(code)
