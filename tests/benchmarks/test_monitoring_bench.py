"""``python -m benchmarks.monitoring``: its comparison of the settings, and its one-line
refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.monitoring import markdown, summarize
from benchmarks.serving import C1, C32, PREDICT, PREDICT_BATCH
from tests.helpers.project import PROJECT_ROOT, VENV_BIN


def run(setting: str, scenario: str, system: str, **numbers: Any) -> dict[str, Any]:
    base = {"p50_ms": None, "p95_ms": None, "p99_ms": None, "rows_per_s": None, "non_200": 0}
    return {"setting": setting, "scenario": scenario, "system": system, **base, **numbers}


def test_settings_are_compared_with_off_by_their_medians() -> None:
    runs = [
        run("off", C1, PREDICT, p50_ms=1.0),
        run("off", C1, PREDICT, p50_ms=3.0),
        run("on", C1, PREDICT, p50_ms=2.1),
        run("off", C32, PREDICT, rows_per_s=100.0),
        run("on", C32, PREDICT, rows_per_s=96.0),
        run("every1", C32, PREDICT, rows_per_s=90.0),
        run("off", C32, PREDICT_BATCH, rows_per_s=50.0),
    ]
    summary = {(s["setting"], s["scenario"], s["system"]): s for s in summarize(runs)}
    p50 = summary[("on", C1, PREDICT)]
    assert (p50["median"], p50["worse_than_off"], p50["met"]) == (2.1, 1.05, True)
    on = summary[("on", C32, PREDICT)]
    assert on["worse_than_off"] == pytest.approx(100 / 96) and on["met"] is True
    every = summary[("every1", C32, PREDICT)]
    assert every["worse_than_off"] == pytest.approx(100 / 90) and every["met"] is False
    assert ("on", C32, PREDICT_BATCH) not in summary  # never measured: no row
    report = {
        "machine": {
            "cpu": "cpu",
            "cores": 2,
            "date": "today",
            "git_commit": "abc",
            "load_average_1m_at_start": 0.5,
        },
        "model": "m:1",
        "workers": 1,
        "order": ["off", "on", "every1"],
        "summary": list(summary.values()),
        "in_process": {
            "record_us_per_call": 1.2,
            "encode_ms_per_1000_records": 2.5,
            "cycle_ms_full_window": 30.0,
            "window_rows": 5000,
        },
    }
    table = markdown(report)
    assert "| every1 | 1 record, 32 concurrent clients | tagserve /predict | rows_per_s |" in table
    assert "**not met**" in table and "`record` 1.20 µs a call" in table


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "error: the load generator `hey` is not on PATH"),
        (["--order", "off,sometimes"], "error: argument --order: settings are off, on, every1"),
    ],
)
def test_refusals_are_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    env = {**os.environ, "PATH": str(VENV_BIN), "TMPDIR": str(tmp_path)}  # no hey there
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.monitoring", "--out", str(tmp_path / "out"), *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert expected in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
