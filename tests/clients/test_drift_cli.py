"""``python -m clients drift FILE --model TAG``: the service's tests on a file, against the
reference the importer saved in the model, as a real subprocess."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from clients.drift import p_phrase
from tests.helpers.monitoring import (
    FEATURES,
    MonitoredModel,
    diamonds_with_gaps,
    scipy_p_values,
)
from tests.helpers.service_models import PROJECT_ROOT, PYTHON, subprocess_env


def run_drift(monitored: MonitoredModel, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "clients", "drift", *args],
        cwd=PROJECT_ROOT,
        env=subprocess_env(monitored),  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_shifted_file_is_flagged_with_the_service_statistics(
    monitored: MonitoredModel, tmp_path: Path
) -> None:
    rows = monitored.train.sample(1_500, random_state=4).reset_index(drop=True)
    rows["carat"] = rows["carat"] * 1.3
    path = tmp_path / "scored.csv"
    rows.to_csv(path, index=False)
    report = tmp_path / "report.html"
    done = run_drift(
        monitored, str(path), "--model", monitored.tag, "--report", str(report), "--json"
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert "carat" in status["drifted"] and status["rows"] == 1_500
    # The model's reference is the data it was cleaned from (all of it, as check_data sets it).
    expected = scipy_p_values(rows, diamonds_with_gaps())
    for name in FEATURES:
        assert status["features"][name]["p_value"] == pytest.approx(expected[name], rel=1e-9)
    page = report.read_text()
    assert all(f'id="feature-{n}"' in page for n in FEATURES)
    plain = run_drift(monitored, str(path), "--model", monitored.tag)
    assert plain.returncode == 0 and plain.stdout.startswith("drift: 1500 rows of")
    assert "drift in carat" in plain.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv"], "input file missing.csv does not exist"),
        (["FILE", "--model", "tagserve-monitored:nope"], "no model 'tagserve-monitored:nope'"),
        (["FILE", "--report", "/no/such/folder/r.html"], "folder /no/such/folder does not exist"),
    ],
)
def test_bad_input_is_one_error_line(
    monitored: MonitoredModel, tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "rows.csv"
    monitored.train.head(50).to_csv(path, index=False)
    args = [str(path) if a == "FILE" else a for a in args]
    if "--model" not in args:
        args += ["--model", monitored.tag]
    done = run_drift(monitored, *args)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert message in done.stderr


def test_the_summary_line_prints_p_values_as_the_report_does() -> None:
    assert [p_phrase(p) for p in (0.0, 1e-320, 3.1e-9, 0.0123)] == [
        "p < 1e-300",
        "p < 1e-300",
        "p=3.1e-09",
        "p=0.0123",
    ]


def test_a_file_scored_with_keep_input_is_tested_for_drift(
    monitored: MonitoredModel, tmp_path: Path
) -> None:
    """The README's example: `score --keep-input` writes the model's columns beside the
    prediction, and `drift` tests that file. A file scored without them gets the error of a
    file lacking the model's columns (not "holds no rows")."""
    from tests.helpers.client_models import model_diamonds

    rows = model_diamonds().drop(columns=["price"]).sample(1_500, random_state=5)
    rows.to_parquet(tmp_path / "rows.parquet", index=False)
    env = subprocess_env(monitored)  # type: ignore[arg-type]
    for name, extra in (("kept.csv", ["--keep-input"]), ("bare.csv", [])):
        scored = subprocess.run(
            [PYTHON, "-m", "clients", "score", str(tmp_path / "rows.parquet"), str(tmp_path / name)]
            + ["--model", monitored.tag, "--no-progress", *extra],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert scored.returncode == 0, scored.stderr
    done = run_drift(monitored, str(tmp_path / "kept.csv"), "--model", monitored.tag)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"drift: 1500 rows of {tmp_path / 'kept.csv'}")
    bare = run_drift(monitored, str(tmp_path / "bare.csv"), "--model", monitored.tag)
    assert bare.returncode == 1
    assert bare.stderr.startswith("error: input lacks model column(s): carat"), bare.stderr
