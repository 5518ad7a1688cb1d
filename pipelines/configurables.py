"""Imports every module that registers gin configurables, so any gin file can name them."""

from pipelines import (  # noqa: F401
  agents,
  atari,
  collection,
  environments,
  evaluation,
  experiment,
  learning,
  networks,
  replay,
  reverb_replay,
)
