"""The command line as a user meets it: `--help`, a quiet start-up, one line for a missing package.

pytest tests/test_command_line.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, train_command

# Each command's own flags (a subset: other flags may be added).
COMMAND_FLAGS = {
  "train": ["gin_file", "gin_bindings", "root_dir"],
  "evaluate": ["root_dir", "num_episodes", "policy", "seed", "video", "video_fps"],
  "launch": ["gin_file", "gin_bindings", "root_dir", "role", "num_actors", "replay_address", "port"],
  "sweep": ["gin_file", "gin_bindings", "sweep", "seeds", "parallel", "root_dir", "dry_run"],
  "tune": ["gin_file", "gin_bindings", "space", "trials", "parallel", "root_dir", "study_name"],
  "report": ["out", "reference", "x", "reps", "seed"],
}

# What our own code writes to stderr during a run; anything else is a library's line. A new
# line of ours (e.g. a progress line for logs) needs its prefix here.
OUR_STDERR_LINES = re.compile(
  r"(device: |warning: |pipelines-train: |Resuming |Saved |Restored |Stopped by signal |progress: "
  r"|Continuing |Starting from |Removed the policies |video: )"
)


def user_env() -> dict:
  """The environment of a user who set nothing: no TF_CPP_MIN_LOG_LEVEL (conftest sets it)."""
  env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PIPELINES_VERBOSE")}
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return env


def console_script(command: str, *args: str) -> list[str]:
  """What the `pipelines-<command>` wrapper pip generates runs (its module is the main one)."""
  code = (
    f"import sys; from pipelines.{command} import run; sys.argv[0] = 'pipelines-{command}'; sys.exit(run())"
  )
  return [sys.executable, "-c", code, *args]


def run(command: list[str], timeout=300) -> subprocess.CompletedProcess:
  return subprocess.run(command, cwd=REPO, env=user_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("way", ["console_script", "module"])
@pytest.mark.parametrize("command", sorted(COMMAND_FLAGS))
def test_help_lists_the_commands_own_flags(command, way):
  if way == "module":
    result = run([sys.executable, "-m", f"pipelines.{command}", "--help"])
  else:
    result = run(console_script(command, "--help"))
  assert result.returncode == 0, result.stderr[-2000:]
  listed = set(re.findall(r"^  --(?:\[no\])?(\w+):", result.stdout, re.MULTILINE))
  assert {*COMMAND_FLAGS[command], "verbose"} <= listed, result.stdout
  assert "logtostderr" not in listed  # absl's own flags are for --helpfull
  assert f"pipelines-{command}" in result.stdout.split("flags:")[0]  # the docstring's usage lines


def test_toy_run_prints_only_our_own_lines_on_stderr(tmp_path):
  result = run(train_command(tmp_path / "run"), timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  assert [line for line in lines if not OUR_STDERR_LINES.match(line)] == []
  assert any(line.startswith("device: ") for line in lines)  # our own lines still come through
  assert "Final evaluation: " in result.stdout


def test_missing_optional_dependency_is_one_line_naming_the_extra(tmp_path):
  # Box2D made unimportable, as if the project's box2d extra were not installed.
  hide_box2d = "import sys; sys.modules['Box2D'] = None; "
  command = console_script("train", "--gin_file=gin/dqn_lunarlander.gin", f"--root_dir={tmp_path / 'run'}")
  command[2] = hide_box2d + command[2]
  result = run(command)
  assert result.returncode == 2, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if not line.startswith("device: ")]
  assert errors == [
    'pipelines-train: error: missing optional dependency: Box2D is not installed: pip install -e ".[box2d]"'
  ], result.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
  "env_id, module, extra", [("LunarLander-v3", "Box2D", "box2d"), ("HalfCheetah-v5", "mujoco", "mujoco")]
)
def test_each_environment_extra_is_named(monkeypatch, capsys, env_id, module, extra):
  import gymnasium as gym

  from pipelines import cli

  # gymnasium imports an environment family's module when the first id of it is made.
  for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.")]:
    monkeypatch.delitem(sys.modules, name)
  for name in [m for m in sys.modules if m.startswith(("gymnasium.envs.box2d", "gymnasium.envs.mujoco"))]:
    monkeypatch.delitem(sys.modules, name)
  monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed

  assert cli.command(lambda: gym.make(env_id), "pipelines-train") == 2
  assert capsys.readouterr().err == (
    f"pipelines-train: error: missing optional dependency: {module} is not installed: "
    f'pip install -e ".[{extra}]"\n'
  )


def test_dev_extra_installs_each_environment_extra():
  """CI installs `.[dev]` (scripts/setup_env.sh) and builds every shipped gin file, so `dev`
  pins what each environment extra that the error lines name pins."""
  import configparser

  from pipelines import cli

  config = configparser.ConfigParser()
  config.read(REPO / "setup.cfg")
  extras = config["options.extras_require"]
  pins = lambda extra: {line.strip() for line in extras[extra].splitlines() if line.strip()}  # noqa: E731
  for extra in sorted(set(cli._EXTRAS.values())):
    assert pins(extra) and pins(extra) <= pins("dev"), (extra, pins(extra), pins("dev"))


def test_a_broken_install_of_an_extra_keeps_its_traceback():
  from pipelines import cli

  def main():
    raise ImportError("cannot import name 'b2World' from 'Box2D'", name="Box2D")

  with pytest.raises(ImportError, match="b2World"):
    cli.command(main, "pipelines-train")


def test_missing_module_names_the_package_to_install(monkeypatch, capsys):
  from pipelines import cli

  monkeypatch.setitem(sys.modules, "ale_py", None)  # as if ale-py were not installed

  def main():
    import ale_py  # noqa: F401

  assert cli.command(main, "pipelines-train") == 2
  assert capsys.readouterr().err == (
    "pipelines-train: error: Python module 'ale_py' is not installed: pip install 'ale-py'\n"
  )


def test_our_own_missing_module_keeps_its_traceback(monkeypatch):
  from pipelines import cli

  monkeypatch.setitem(sys.modules, "pipelines.no_such_module", None)

  def main():
    import pipelines.no_such_module  # noqa: F401

  with pytest.raises(ModuleNotFoundError):
    cli.command(main, "pipelines-train")


@pytest.mark.parametrize(
  ("args", "user_level", "expected"),
  [((), None, "3 0"), (("--verbose",), None, "0 1"), (("--verbose",), "1", "1 1")],
)
def test_verbose_lowers_the_library_log_level_unless_the_user_set_one(args, user_level, expected):
  code = (
    "import os, sys; from pipelines import cli; sys.argv[0] = 'pipelines-x'; "
    "level = lambda name: os.environ.get(name, '0'); "
    "cli.run(lambda argv: print(level('TF_CPP_MIN_LOG_LEVEL'), level('PIPELINES_VERBOSE')), "
    "sys.modules['__main__'])"
  )
  env = user_env() | ({"TF_CPP_MIN_LOG_LEVEL": user_level} if user_level else {})
  result = subprocess.run(
    [sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == expected.split()


def test_a_bad_flag_is_one_error_line_naming_it():
  result = run(console_script("train", "--gin_file=gin/dqn_cartpole.gin", "--root_dir=x", "--seeds=3"))
  assert result.returncode == 2
  assert result.stderr == (
    "pipelines-train: error: Unknown command line flag 'seeds' (--help lists the flags)\n"
  )


def test_gin_includes_work_beside_a_folder_named_like_the_include(tmp_path, monkeypatch):
  """An `envs/` folder on sys.path (a namespace package) must not break `include 'envs/...'`."""
  import gin

  from pipelines import cli, configurables  # noqa: F401  registers every configurable

  (tmp_path / "envs").mkdir()
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.chdir(tmp_path)
  gin.clear_config()
  try:
    cli.parse_gin([str(REPO / "gin/dqn_cartpole.gin")], [])
    assert gin.query_parameter("gymnasium_env.env_id") == "CartPole-v1"
  finally:
    gin.clear_config()
