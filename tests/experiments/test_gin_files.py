"""Every shipped gin file parses, and its experiment binds: all components build from it."""

from pathlib import Path

import gin
import pytest

from pipelines import cli, configurables  # noqa: F401

GIN_DIR = Path(__file__).resolve().parents[2] / "gin"
EXPERIMENTS = sorted(GIN_DIR.glob("*.gin"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_parses_and_builds(path):
  gin.clear_config()
  try:
    cli.parse_gin([str(path)], [])
    parts = configurables.experiment.build_components()
    assert parts.agent.collect_data_spec is not None
    assert parts.trainer.env_steps_per_iteration >= 1
    parts.close()
  finally:
    gin.clear_config()


def test_every_experiment_file_is_tested():
  assert any(p.name == "dqn_cartpole.gin" for p in EXPERIMENTS)
  for path in GIN_DIR.rglob("*.gin"):  # shared fragments are included by an experiment
    if path.parent != GIN_DIR:
      assert any(path.name in p.read_text() for p in EXPERIMENTS), path
