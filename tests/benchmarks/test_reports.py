"""The benchmark's ratios against the project's targets, and the worker sweep's medians."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.serving import (
    C1,
    C32,
    FAST_MODEL,
    FLOOR,
    MEMORY,
    MLFLOW,
    MLFLOW_SERVE,
    MLSERVER,
    MODEL_RECORD,
    PREDICT,
    PREDICT_BATCH,
    SCENARIOS,
    TAGSERVE,
    TEXT_C32,
    Target,
    evaluate,
    markdown,
    ratio_text,
    ratios,
)
from benchmarks.workers import summarize


def row(scenario: str, system: str, **numbers: Any) -> dict[str, Any]:
    base = {"p50_ms": None, "p95_ms": None, "p99_ms": None, "rows_per_s": None, "non_200": 0}
    return {"scenario": scenario, "system": system, **base, **numbers}


LATENCY = Target("p50, ours / floor", "p50_ms", (C1, PREDICT), (C1, FLOOR), at_most=1.5)


@pytest.mark.parametrize(("times_the_floor", "met"), [(1.2, True), (1.5, True), (1.6, False)])
def test_an_upper_bound_is_met_up_to_the_bound(times_the_floor: float, met: bool) -> None:
    results = [row(C1, FLOOR, p50_ms=2.0), row(C1, PREDICT, p50_ms=2.0 * times_the_floor)]
    check = evaluate(LATENCY, results)
    assert check["value"] == pytest.approx(times_the_floor)
    assert check["met"] is met and check["target"] == "<= 1.5x"


def test_a_ratio_missing_a_side_is_neither_met_nor_failed() -> None:
    check = evaluate(LATENCY, [row(C1, PREDICT, p50_ms=2.0)])
    assert check["value"] is None and check["met"] is None


def test_every_target_is_reported_with_the_non_200_check() -> None:
    results = [
        row(C32, PREDICT_BATCH, rows_per_s=700.0, non_200=3),
        row(C32, MLFLOW, rows_per_s=100.0),
    ]
    checks = {c["ratio"]: c for c in ratios(results)}
    assert checks["32 clients rows/s, predict_batch / MLflow"]["value"] == pytest.approx(7.0)
    assert checks["32 clients rows/s, predict_batch / MLflow"]["met"] is True
    assert checks["non-200 answers, every scenario"]["met"] is False
    assert checks["c=1 p50, MLflow / ours"]["met"] is None  # not measured in this run


def a_report(results: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "machine": {
            "cpu": "cpu",
            "cores": 2,
            "memory_gb": 1.0,
            "os": "os",
            "python": "3.11",
            "versions": {},
            "load_average_1m_at_start": 0.5,
            "date": "today",
            "git_commit": "abc",
        },
        "model": {"tag": "m:1", "estimator": "Forest", "n_estimators": 5, "max_depth": 3},
        "workers": 1,
        "results": results,
        "ratios": ratios(results),
        **extra,
    }


def test_the_table_shows_each_ratio_on_its_row_and_whether_targets_are_met() -> None:
    results = [row(C1, FLOOR, p50_ms=1.0), row(C1, PREDICT, p50_ms=2.0)]
    table = markdown(a_report(results))
    assert "p50 ours / floor: 2.00x" in table
    assert "| /predict c=1 p50, ours / floor | 2.00x | <= 1.2x | **not met** |" in table


def test_an_absolute_target_is_the_value_itself_in_its_unit() -> None:
    results = [row(MODEL_RECORD, FAST_MODEL, p50_ms=0.021)]
    checks = {c["ratio"]: c for c in ratios(results)}
    check = checks["one record in-process, fast path (record entry) p50"]
    assert check["value"] == pytest.approx(0.021) and check["met"] is True
    assert ratio_text(check) == "0.021 ms" and check["target"] == "<= 0.03 ms"
    slow = {c["ratio"]: c for c in ratios([row(MODEL_RECORD, FAST_MODEL, p50_ms=0.05)])}
    assert slow["one record in-process, fast path (record entry) p50"]["met"] is False


def test_worker_counts_are_compared_by_their_medians_over_repeats() -> None:
    order = [(1, 4.0, 100.0), (2, 2.0, 300.0), (1, 6.0, 50.0), (2, 3.0, 100.0)]
    runs = [
        {**row(C1, PREDICT, p50_ms=p50, p99_ms=9.0, rows_per_s=rate), "workers": workers}
        for workers, p50, rate in order
    ]
    one, two = summarize(runs)
    assert (one["workers"], one["runs"], one["p50_ms"], one["rows_per_s"]) == (1, 2, 5.0, 75.0)
    assert (two["p50_ms"], two["rows_per_s"]) == (2.5, 200.0)
    assert two["p50_ratio"] == pytest.approx(0.5)
    assert two["rows_per_s_ratio"] == pytest.approx(200 / 75)
    assert one["p50_ratio"] == pytest.approx(1.0)


MEMORY_SCENARIO = f"{MEMORY} 2,000 requests"


def test_memory_is_compared_to_mlserver_with_its_bound_and_to_mlflow_without() -> None:
    results = [
        row(MEMORY_SCENARIO, TAGSERVE, rss_mb=500.0, requests=2000),
        row(MEMORY_SCENARIO, MLFLOW_SERVE, rss_mb=650.0, requests=2000),
        row(MEMORY_SCENARIO, MLSERVER, rss_mb=400.0, requests=2000),
    ]
    checks = {c["ratio"]: c for c in ratios(results)}
    lean = checks["memory of one replica, tagserve / MLServer"]
    assert lean["value"] == pytest.approx(1.25) and lean["met"] is True
    assert lean["target"] == "<= 1.3x"
    assert checks["memory of one replica, tagserve / MLflow"]["value"] == pytest.approx(500 / 650)
    fat = {c["ratio"]: c for c in ratios([{**results[0], "rss_mb": 560.0}, results[2]])}
    assert fat["memory of one replica, tagserve / MLServer"]["met"] is False
    table = markdown(a_report(results))
    assert f"| {MEMORY_SCENARIO} | {TAGSERVE} | - | - | - | - | 500 | 0 | RSS" in table
    assert "RSS tagserve / MLServer: 1.25x" in table


def test_a_server_that_could_not_run_says_why_and_leaves_its_ratio_open() -> None:
    note = "skipped: MLServer is not installed (.tools/mlserver-venv missing)"
    results = [
        row(MEMORY_SCENARIO, TAGSERVE, rss_mb=500.0, requests=2000),
        row(MEMORY_SCENARIO, MLSERVER, requests=0, note=note),
    ]
    checks = {c["ratio"]: c for c in ratios(results)}
    assert checks["memory of one replica, tagserve / MLServer"]["met"] is None
    assert f"| {MLSERVER} | - | - | - | - | - | 0 | {note} |" in markdown(a_report(results))


def test_batching_value_is_predict_batch_against_predict_on_the_text_model() -> None:
    results = [
        row(TEXT_C32, PREDICT, rows_per_s=100.0),
        row(TEXT_C32, PREDICT_BATCH, rows_per_s=290.0),
        row(C32, PREDICT, rows_per_s=1000.0),  # the diamonds model: another scenario
    ]
    check = {c["ratio"]: c for c in ratios(results)}[
        "text model, 32 clients rows/s, predict_batch / predict"
    ]
    assert check["value"] == pytest.approx(2.9) and check["met"] is False


def test_a_partial_run_names_its_parts() -> None:
    results = [row(C1, FLOOR, p50_ms=1.0)]
    assert "; parts: memory, batching." in markdown(a_report(results, only=["memory", "batching"]))
    assert "parts:" not in markdown(a_report(results, only=list(SCENARIOS)))
