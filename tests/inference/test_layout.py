"""Each concern has one home: the core and everything that consumes a model import nothing
from the training pipeline, and the core imports no Hydra and no W&B."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers.project import PROJECT_ROOT

CONSUMERS = ["clients", "importers", "release", "benchmarks", "serving", "inference", "service.py"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and getattr(node, "level", 0) == 0
        for alias in node.names
    }


def files(part: str) -> list[Path]:
    root = PROJECT_ROOT / part
    return [root] if root.is_file() else sorted(root.rglob("*.py"))


@pytest.mark.parametrize("part", CONSUMERS)
def test_model_consumers_import_nothing_from_the_pipeline(part: str) -> None:
    for path in files(part):
        assert "pipeline" not in imported_modules(path), f"{path} imports pipeline"


def test_tools_outside_tests_import_nothing_from_tests() -> None:
    tools = [*CONSUMERS, "pipeline", "artifacts", "scripts"]
    for path in (p for part in tools for p in files(part)):
        assert "tests" not in imported_modules(path), f"{path} imports from tests/"


def test_the_core_needs_no_hydra_no_wandb_and_no_other_project_package() -> None:
    for path in files("inference"):
        imported = imported_modules(path)
        assert not imported & {"hydra", "omegaconf", "wandb"}, f"{path}: {imported}"
        project = {"pipeline", "importers", "clients", "release", "serving", "artifacts"}
        assert not imported & project, f"{path}: {imported & project}"


def test_the_fast_path_runtime_ships_no_build_or_check() -> None:
    """What a bento ships to run the fast path (inference.fastpath, inference.forest) needs no
    scikit-learn and holds no build or check code: those are the importer's
    (importers/fast_build.py, importers/fast.py)."""
    runtime = [PROJECT_ROOT / "inference" / "fastpath.py", PROJECT_ROOT / "inference" / "forest.py"]
    for path in runtime:
        assert not imported_modules(path) & {"sklearn", "skops", "treelite"}, path
        tree = ast.parse(path.read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert not defined & {"build", "check_exact", "edge_rows", "forest_arrays", "save"}, path
