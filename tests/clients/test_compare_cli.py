"""``python -m clients compare``: the offline comparison of a model and a candidate refuses bad
input in one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd

from tests.helpers.service_models import (
    PROJECT_ROOT,
    PYTHON,
    Models,
    diamond_records,
    subprocess_env,
)


def test_compare_refuses_in_one_line(models: Models, candidate: str, tmp_path: Path) -> None:
    table = tmp_path / "rows.csv"
    pd.DataFrame(diamond_records(5)).to_csv(table, index=False)
    for args, problem in (
        (
            [str(tmp_path / "none.csv"), "--model", models.regressor, "--candidate", candidate],
            "does not exist",
        ),
        (
            [str(table), "--model", models.regressor, "--candidate", models.classifier],
            "is a classification model",
        ),
        ([str(table), "--model", models.regressor, "--candidate", "nope:v1"], "no model"),
    ):
        done = subprocess.run(
            [PYTHON, "-m", "clients", "compare", *args],
            cwd=PROJECT_ROOT, env=subprocess_env(models), capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 1 and done.stdout == "", done.stdout
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert problem in done.stderr, done.stderr
