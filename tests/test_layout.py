"""The package layout's one rule: the data-flow building blocks stand alone.

pytest tests/test_layout.py

`envs/`, `agents/`, `replay/` and `storage/` are what the loop (`training/`), the process
roles (`distributed/`), the tools and the commands are made of; they import nothing from
those (only the shared plumbing, `pipelines.errors` and `pipelines.signals`, and their own
package), so each can be read, tested and swapped without the loop. Read from the source
(`ast`), so an import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipelines"
BUILDING_BLOCKS = ["envs", "agents", "replay", "storage"]
ALLOWED = {"pipelines.errors", "pipelines.signals"}


def _pipelines_imports(path: Path) -> set[str]:
  """Every `pipelines...` module that `path` imports, as dotted names."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found |= {alias.name for alias in node.names if alias.name.startswith("pipelines")}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipelines"):
      # `from pipelines import cli` imports pipelines.cli; `from pipelines.x import Y` pipelines.x
      names = [f"{node.module}.{alias.name}" for alias in node.names] if node.module == "pipelines" else []
      found |= set(names) or {node.module}
  return found


@pytest.mark.parametrize("package", BUILDING_BLOCKS)
def test_building_blocks_import_nothing_from_the_loop_tools_or_commands(package):
  offending = {}
  for path in sorted((PACKAGE / package).glob("*.py")):
    outside = {
      name
      for name in _pipelines_imports(path)
      if name not in ALLOWED and not name.startswith(f"pipelines.{package}")
    }
    if outside:
      offending[path.name] = sorted(outside)
  assert offending == {}, f"pipelines/{package}/ imports from outside its package: {offending}"


def test_the_check_sees_imports_inside_functions(tmp_path):
  module = tmp_path / "m.py"
  module.write_text("def f():\n  from pipelines.training import experiment\n  import pipelines.cli\n")
  assert _pipelines_imports(module) == {"pipelines.training", "pipelines.cli"}


def test_every_module_is_in_a_package_or_is_a_command_or_shared_plumbing():
  """`ls pipelines` stays readable: new modules go into the package of their stage."""
  top = sorted(p.stem for p in PACKAGE.glob("*.py"))
  assert top == [
    "__init__",
    "cli",
    "configurables",
    "devices",
    "errors",
    "evaluate",
    "launch",
    "report",
    "signals",
    "sweep",
    "train",
    "tune",
  ]
