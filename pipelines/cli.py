"""What every command-line tool shares: quiet start-up, `--help`, gin parsing, one-line errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# Set before TensorFlow loads (its C++ logging reads it once): only FATAL lines, so neither
# its start-up chatter (cuDNN/cuFFT/cuBLAS registration, cpu_feature_guard, TF-TRT) nor
# "SetPriority unimplemented" reaches the terminal; a failing op still raises in Python.
# `--verbose` (or PIPELINES_VERBOSE=1) lowers it to 0; a value the user set is kept.
VERBOSE_ENV = "PIPELINES_VERBOSE"
_TF_LEVEL_FROM_USER = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if os.environ.get(VERBOSE_ENV, "0") != "0" else "3")
# pygame (gymnasium's classic-control rendering, for videos) prints a banner on import.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import atexit  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import tokenize  # noqa: E402
import types  # noqa: E402

import gin  # noqa: E402
from absl import app, flags  # noqa: E402
from gin import config_parser  # noqa: E402

flags.DEFINE_bool(
  "verbose",
  False,
  f"Show TensorFlow's, XLA's and the libraries' own log lines (also: {VERBOSE_ENV}=1).",
)


def verbose() -> bool:
  """Whether the user asked for the libraries' log lines (`--verbose` or PIPELINES_VERBOSE=1)."""
  return os.environ.get(VERBOSE_ENV, "0") != "0"


def quiet_libraries() -> None:
  """Keeps the terminal for our own output: no INFO logs, no deprecation chatter.

  tf-agents imports the old `gym` (a transitive dependency we never use), whose import
  prints an 'unmaintained' notice unless this runs first; gin logs an error for every
  search-path miss; ALE prints a banner for every game. With `--verbose` the libraries keep
  their own log levels.
  """
  logging.getLogger().addFilter(lambda record: not record.getMessage().startswith("Path not found"))
  if verbose():
    return
  try:
    import gym_notices.notices

    gym_notices.notices.notices.clear()
  except ImportError:
    pass
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.ERROR)  # e.g. PolicySaver's "Sanitizing" warnings
  import tensorflow as tf

  tf.get_logger().setLevel(logging.ERROR)
  import warnings

  warnings.filterwarnings("ignore", category=UserWarning, module="tensorflow")
  warnings.filterwarnings("ignore", category=SyntaxWarning)
  try:  # each ALE game prints a version banner ("A.L.E: ...", "[Powered by Stella]") when made
    import ale_py

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
  except ImportError:
    pass


def absorb_xla_start_lines() -> None:
  """Compiles a trivial XLA function with stderr pointed at /dev/null: call before the run's first.

  XLA lives in libtensorflow_cc, whose abseil logging is private to it (no environment
  variable, no exported function sets its level), and a process's first XLA compile prints
  `WARNING: All log messages before absl::InitializeLog() is called are written to STDERR`
  and `I0000 ... device_compiler.h:186] Compiled cluster using XLA!`, each once per process.
  Spending both on this compile (~0.2 s on CPU) keeps them off the terminal and hides
  nothing later: every other line, our own and TensorFlow's, still reaches stderr. Call it
  after `devices.configure` (it places a tensor on the training device).
  """
  if verbose():
    return
  import tensorflow as tf

  sys.stderr.flush()
  saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 2)
  try:
    tf.function(lambda x: x + 1, jit_compile=True)(tf.constant(0.0))
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(null)


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


def _tolerate_namespace_packages_in_includes() -> None:
  """Lets `include 'envs/cartpole.gin'` work when an `envs/` folder sits on sys.path.

  For a relative include gin also asks whether `envs` is an importable package holding the
  file; for a folder without `__init__.py` (a namespace package, e.g. an `envs/` folder in
  the working directory) its check crashes on the missing origin (gin-config 0.5: TypeError)
  instead of answering "no", and the whole gin file fails before our search path is tried.
  """
  from gin import config as gin_config
  from gin import resource_reader

  def exists(path: str) -> bool:
    try:
      return resource_reader.system_path_file_exists(path)
    except TypeError:
      return False

  gin_config._FILE_READERS[:] = [
    (reader, exists if check is resource_reader.system_path_file_exists else check)
    for reader, check in gin_config._FILE_READERS
  ]


_tolerate_namespace_packages_in_includes()


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


def require_gin_files(gin_files) -> None:
  """Every command that builds an experiment needs its gin files: one error line without them."""
  if not gin_files:
    raise PipelineError("give at least one --gin_file (e.g. gin/dqn_cartpole.gin)")


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


# Modules a shipped gin file, a flag or a tool may need, and what to install for each.
_PACKAGES = {
  "ale_py": "ale-py",
  "pygame": "gymnasium[classic-control]",
  "cv2": "opencv-python-headless",
  "imageio": "imageio",
  "imageio_ffmpeg": "imageio-ffmpeg",
  "optuna": "optuna",
  "rliable": "rliable",
  "reverb": "dm-reverb",
  "yaml": "PyYAML",
  "wandb": "wandb",
}


# Environment families that this project installs as its own extras (setup.cfg), by the
# module gymnasium imports for them: the error names the extra, not gymnasium's (whose box2d
# extra wants swig and a compiler for box2d-py, and whose pins may not fit numpy 1.26).
_EXTRAS = {"Box2D": "box2d", "mujoco": "mujoco"}


def _missing_module(error: BaseException | None) -> str | None:
  """The top-level module that is not installed: `error`'s own, or that of the import it was
  raised from (gymnasium: `raise DependencyNotInstalled(...) from e`). gin re-raises an
  error from a configurable as a copy `from None` whose context is the original, so that
  chain is followed too. An ImportError of a module that is there (a broken install) is not
  a missing one."""
  for _ in range(8):  # a chain is short; a cycle must not hang the error path
    if error is None:
      return None
    if isinstance(error, ModuleNotFoundError) and error.name:
      return error.name.split(".")[0]
    error = error.__cause__ or (error.__context__ if error.__suppress_context__ else None)
  return None


def missing_dependency(error: BaseException) -> PipelineError | None:
  """The one-line error for a package that is not installed, naming what to install.

  None for anything else (our own modules, a broken install of a present package), which
  keeps its traceback.
  """
  module = _missing_module(error)
  if module in _EXTRAS:
    return PipelineError(
      f'missing optional dependency: {module} is not installed: pip install -e ".[{_EXTRAS[module]}]"'
    )
  gymnasium_error = sys.modules.get("gymnasium.error")  # not loaded: it raised nothing
  if gymnasium_error is not None and isinstance(error, gymnasium_error.DependencyNotInstalled):
    return PipelineError(f"missing optional dependency: {first_line(error)}")
  if not isinstance(error, ModuleNotFoundError) or module is None or module == "pipelines":
    return None
  package = _PACKAGES.get(module, module)
  return PipelineError(f"Python module {module!r} is not installed: pip install '{package}'")


def command(main: Callable[[], int | None], program: str) -> int:
  """`main_with_errors`, with a missing package also turned into one line (exit 2)."""

  def checked() -> int | None:
    try:
      return main()
    except Exception as e:
      error = missing_dependency(e)
      if error is None:
        raise
      raise error from None

  return main_with_errors(checked, program)


class _HelpFlag(flags.BooleanFlag):
  """`--help`, `-?`, `--helpshort`: the command's docstring and its own flags, then exit 0.

  absl's help flag lists the key flags of the main module, which for a console script is
  the generated wrapper (no flags, no docstring), and exits 1.
  """

  def __init__(self, name: str, short_name: str | None, doc: str):
    super().__init__(name, False, "show this help", short_name=short_name, allow_override=True)
    self._doc = doc

  def parse(self, argument):
    if self._parse(argument):
      print(self._doc.rstrip() + "\n\nflags:\n" + flags.FLAGS.main_module_help())
      print("\nTry --helpfull to get a list of all flags, the libraries' included.")
      sys.exit(0)


def run(main: Callable[[list[str]], None], module: types.ModuleType) -> None:
  """Parses the flags and calls `main`: what each command's console-script entry point runs.

  The flags `module` defined (and `--verbose`) are made key flags of the main module, so
  `--help` lists them whether the command runs as a console script or as `python -m`.
  """
  # absl files a flag under the module that defined it, `sys.argv[0]` for `__main__`.
  defined_in = sys.argv[0] if module.__name__ == "__main__" else module.__name__
  for flag in [*flags.FLAGS.get_key_flags_for_module(defined_in), flags.FLAGS["verbose"]]:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.define_help_flags()
  doc = module.__doc__ or f"USAGE: {Path(sys.argv[0]).name} [flags]"
  for name, short_name in (("help", "?"), ("helpshort", None)):
    flags.DEFINE_flag(_HelpFlag(name, short_name, doc))

  def verbose_main(argv: list[str]) -> None:
    if flags.FLAGS.verbose:
      os.environ[VERBOSE_ENV] = "1"  # child processes (sweep, tune, launch) inherit it
      if not _TF_LEVEL_FROM_USER:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    main(argv)

  program = f"pipelines-{Path(getattr(module, '__file__', sys.argv[0])).stem}"  # -c: no file

  def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with a bad flag as our one error line (absl: 'FATAL Flags parsing error')."""
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      print(f"{program}: error: {first_line(e)} (--help lists the flags)", file=sys.stderr)
      sys.exit(2)

  app.run(verbose_main, flags_parser=parse_flags)
