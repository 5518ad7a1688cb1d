"""Imports every module that registers gin configurables, so any gin file can name them."""

from pipelines import agents, collection, environments, evaluation, experiment, learning, networks, replay  # noqa: F401
