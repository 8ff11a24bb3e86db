"""The benchmark commands refuse to start in one readable line, leaving nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.project import PROJECT_ROOT, VENV_BIN


def run_benchmark(module: str, *args: str, path: str, out: Path) -> subprocess.CompletedProcess:
    (out.parent / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "PATH": path, "TMPDIR": str(out.parent / "tmp")}
    cmd = [sys.executable, "-m", module, "--out", str(out), *args]
    return subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("module", ["benchmarks.serving", "benchmarks.workers"])
def test_without_hey_the_benchmark_says_how_to_get_it(module: str, tmp_path: Path) -> None:
    done = run_benchmark(module, path=str(VENV_BIN), out=tmp_path / "results")  # no hey there
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: the load generator `hey` is not on PATH: install it with "
        "`apt-get install -y hey` (make bench does it when missing)"
    ]
    assert not (tmp_path / "results").exists()


@pytest.mark.usefixtures("hey_installed")
def test_a_missing_prod_model_is_one_error_line(tmp_path: Path) -> None:
    done = run_benchmark(
        "benchmarks.serving",
        "--home",
        str(tmp_path / "no-home"),
        path=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        out=tmp_path / "results",
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: import of model_export:prod failed")
    assert "no local artifact store" in lines[0]
    assert not (tmp_path / "results").exists()
    assert not any((tmp_path / "tmp").iterdir())  # its temporary folder removed


def test_the_forest_benchmark_without_the_model_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "bentoml").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.forest", "--out", str(tmp_path / "results")],
        cwd=PROJECT_ROOT,
        env={**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "tagserve-diamonds" in lines[0]
    assert not (tmp_path / "results").exists()
