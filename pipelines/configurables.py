"""Imports every module that registers gin configurables, so any gin file can name them."""

from pipelines.agents import actor_critic, agents, networks  # noqa: F401
from pipelines.envs import atari, environments  # noqa: F401
from pipelines.replay import replay, reverb_replay  # noqa: F401
from pipelines.training import collection, evaluation, experiment, learning  # noqa: F401
