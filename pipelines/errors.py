"""The one exception type the command-line tools turn into a single error line."""


class PipelineError(Exception):
  """A user-facing problem (bad config, bad run folder, bad input): printed, exit code 2."""
