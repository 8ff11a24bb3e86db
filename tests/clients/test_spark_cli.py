"""``python -m clients spark``: bad input is one error line, before a Spark session (a JVM)
starts."""

from __future__ import annotations

from tests.helpers.client_models import (
    env_for,
    run_clients,
)


def test_spark_cli_errors_are_one_line(tmp_path):
    env = env_for(tmp_path / "bentoml")
    done = run_clients(
        "spark",
        str(tmp_path / "missing.csv"),
        str(tmp_path / "out"),
        "--model-dir",
        str(tmp_path),
        env=env,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path} is not an MLflow model folder (no MLmodel file)"
    ]
