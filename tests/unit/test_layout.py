"""The package layout holds what docs/design.md promises: the folder tree is the loop.

One subpackage per stage with a docstring and ``__all__``; at most four top-level modules; no
module imports another's private name; no import cycle between modules (function-level imports
count); every lake path spelled out in ``ctloop.lake.paths`` alone.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "jobs" / "ctloop"
STAGES = {"config", "lake", "ingest", "features", "training", "evaluation", "registry", "retrain", "orchestration",
          "stack", "sim"}


def _module_name(path: Path) -> str:
    if path.is_relative_to(PACKAGE):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    else:
        parts = ("ctloop_airflow",) + path.relative_to(ROOT / "plugins" / "ctloop_airflow").with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _sources() -> dict[str, Path]:
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "plugins" / "ctloop_airflow").rglob("*.py")]
    return {_module_name(p): p for p in files}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every ``import`` and ``from … import`` anywhere in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


def test_one_subpackage_per_stage_each_saying_what_it_takes_and_gives() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert STAGES <= packages, f"missing stages: {STAGES - packages}"
    for name in packages:
        tree = ast.parse((PACKAGE / name / "__init__.py").read_text())
        doc = ast.get_docstring(tree)
        assert doc and len(doc) > 80, f"ctloop.{name}: its __init__ needs a docstring saying what the stage does"
        exported = next((n.value for n in tree.body if isinstance(n, ast.Assign)
                         and any(getattr(t, "id", "") == "__all__" for t in n.targets)), None)
        assert exported is not None, f"ctloop.{name}: __init__ has no __all__"
        modules = {p.stem for p in (PACKAGE / name).glob("*.py") if p.stem != "__init__"}
        assert set(ast.literal_eval(exported)) == modules, f"ctloop.{name}: __all__ must list its modules"
        # an __init__ is a signpost, not an implementation: nothing but the docstring and __all__
        assert len(tree.body) == 2, f"ctloop.{name}: __init__ holds code"


def test_at_most_four_top_level_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 4 and "cli.py" in top, top


def test_no_module_imports_a_private_name_of_another() -> None:
    sources = _sources()
    offenders = [f"{mod} imports {name} from {target}" for mod, path in sources.items()
                 for target, names in _imports(path) if target in sources and target != mod
                 for name in names if name.startswith("_") and not name.startswith("__")]
    assert offenders == []


def test_no_import_cycles() -> None:
    from graphlib import CycleError, TopologicalSorter

    sources = _sources()
    graph: dict[str, set[str]] = {}
    for mod, path in sources.items():
        targets = set()
        for target, names in _imports(path):
            if target in sources:
                targets.add(target)
            targets |= {f"{target}.{n}" for n in names if f"{target}.{n}" in sources}  # `from pkg import module`
        graph[mod] = targets - {mod}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


LAKE_PATH = re.compile(r"""f?["'](raw|curated|quarantine|features|training_sets|_state|_dlq|_manifests)/""")


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_lake_paths_live_in_one_module(path: Path) -> None:
    if path == PACKAGE / "lake" / "paths.py":
        return
    code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith(("#", "``")))
    assert not LAKE_PATH.search(code), f"{path.name} spells out a lake path: use ctloop.lake.paths"
