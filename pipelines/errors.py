"""The exception types the command-line tools turn into a single error line."""


class PipelineError(Exception):
  """A user-facing problem (bad config, bad run folder, bad input): printed, exit code 2."""

  exit_code = 2


class WriteError(PipelineError):
  """A write that failed (disk full, permission lost, read-only folder) after the run started.

  Exit code 74 (EX_IOERR of sysexits.h), not 2: the input was fine and the same command
  resumes once the cause is gone, so a relaunching wrapper (scripts/reproduce_breakout.sh)
  keeps retrying instead of giving up as it does on bad input.
  """

  exit_code = 74
