"""The monitor in-process: workers' windows merged under one leader, recording that never fails
and counts what it drops, an unwritable shared folder; promtool on the shipped Prometheus
files."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from inference import drift
from serving import monitoring
from serving.metrics import monitor_metrics
from tests.helpers import marks
from tests.helpers.monitoring import (
    FEATURES,
    NUMBERS,
    PROMETHEUS_DIR,
    as_records,
    diamonds_with_gaps,
    scipy_p_values,
)


def small_reference() -> drift.Reference:
    data = diamonds_with_gaps()
    kinds = {c: drift.NUMBER if c in NUMBERS else drift.CATEGORY for c in FEATURES}
    features = {c: drift.Distribution.of(data[c], k) for c, k in kinds.items()}
    return drift.Reference(features, drift.Distribution.of(data["price"], drift.NUMBER))


def test_workers_windows_merge_under_one_leader(tmp_path: Path) -> None:
    """Two monitors (two workers) share a folder: one leads, and tests the rows of both."""
    reference = small_reference()
    workers = [
        monitoring.Monitor(
            reference, enabled=True, window=500, min_rows=10, every_s=60, folder=tmp_path
        )
        for _ in range(2)
    ]
    data = diamonds_with_gaps().sample(600, random_state=1)
    records = as_records(data)
    workers[0].record(records[:300], [{"prediction": p} for p in data["price"][:300]])
    frame = data[FEATURES].iloc[300:]  # /invocations records a frame and an array
    workers[1].record(frame, data["price"].to_numpy()[300:])
    for worker in workers:
        worker.collect()
        worker.window.changed = True
    # Distinct window files per worker (the pid names them): write them as two workers would.
    for i, worker in enumerate(workers):
        arrays = worker.window.arrays()
        np.savez(tmp_path / f"{monitoring.WINDOW_PREFIX}{i}.npz", **arrays)
    # A dead worker's file (not touched for several cycles) is left out.
    stale = tmp_path / f"{monitoring.WINDOW_PREFIX}999.npz"
    shutil.copy(tmp_path / f"{monitoring.WINDOW_PREFIX}0.npz", stale)
    os.utime(stale, (time.time() - 600, time.time() - 600))
    leaders = [worker.lead() for worker in workers]
    assert leaders == [True, False]
    status = workers[0].evaluate()
    assert status["window"]["rows"] == 500 and status["window"]["workers"] == 2
    assert workers[1].status() == status | {"evaluated_at": status["evaluated_at"]}
    # The leader dies (its lock goes with its file descriptor): the other takes over.
    os.close(workers[0].leader_fd)
    assert workers[1].lead()
    # The newest 500 rows of the two workers, tested against the reference's data.
    expected = scipy_p_values(data.iloc[100:], diamonds_with_gaps())
    for name in FEATURES:
        assert status["features"][name]["p_value"] == pytest.approx(expected[name], rel=1e-9)


def test_recording_never_fails_and_counts_what_it_drops(tmp_path: Path) -> None:
    monitor = monitoring.Monitor(small_reference(), enabled=True, window=10, folder=tmp_path)
    monitor.capacity = 5
    dropped = monitor_metrics().dropped
    before = dropped._value.get()
    monitor.record([{"carat": 1.0}] * 4, [1.0] * 4)
    monitor.record([{"carat": 1.0}] * 3, [1.0] * 3)  # 7 > 5: dropped, counted
    monitor.record(None, None)  # not even rows: ignored, no exception
    assert dropped._value.get() - before == 3
    assert monitor.queued_rows == 4


def test_promtool_checks_the_shipped_config_and_rules() -> None:
    promtool = marks.tool("promtool", "apt-get install -y prometheus")
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "rules.yml"],
        ["test", "rules", "rules_test.yml"],
    ):
        done = subprocess.run(
            [promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_an_unwritable_shared_folder_leaves_the_service_unmonitored(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monitor = monitoring.Monitor(small_reference(), enabled=True, folder=blocker / "monitor")
    monitor.start()
    assert monitor.thread is None
    status = monitor.status()
    assert status["enabled"] is False and "cannot write" in status["reason"]
    monitor.record([{"carat": 1.0}], [1.0])  # still never raises


def test_the_first_test_waits_for_every_worker_then_says_what_it_covers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers' monitors in one folder: the leader's first test waits until the other's
    window is written, and covers both; alone past the bound, it tests and says 1 of 2."""
    reference = small_reference()
    data = diamonds_with_gaps().sample(600, random_state=2)
    answers = [{"prediction": p} for p in data["price"]]
    options = {"enabled": True, "window": 1_000, "min_rows": 10, "every_s": 60, "workers": 2}
    leader, other = (monitoring.Monitor(reference, folder=tmp_path, **options) for _ in range(2))
    leader.record(as_records(data.iloc[:300]), answers[:300])
    other.record(as_records(data.iloc[300:]), answers[300:])
    for monitor in (leader, other):
        monitor.collect()
    # Both monitors share one pid here: the other worker's file gets a pid of its own.
    assert leader.cycle() == monitoring.WAITING  # leads, and waits for the other worker
    assert not (tmp_path / monitoring.RESULT_FILE).exists()
    arrays = other.window.arrays()
    np.savez(tmp_path / f"{monitoring.WINDOW_PREFIX}{os.getpid() + 1}.npz", **arrays)
    assert leader.cycle() == ""
    status = leader.status()
    assert status["window"]["rows"] == 600
    assert status["window"]["workers"] == status["window"]["workers_expected"] == 2
    assert sorted(status["window"]["worker_pids"]) == [os.getpid(), os.getpid() + 1]

    # Alone: once the bound has passed, it tests what it has and says so.
    monkeypatch.setattr(monitoring, "FIRST_WAIT_MIN_S", 0.0)
    alone_folder = tmp_path / "alone"
    alone_folder.mkdir()
    alone = monitoring.Monitor(reference, folder=alone_folder, **options | {"every_s": 0.05})
    alone.record(as_records(data.iloc[:300]), answers[:300])
    alone.collect()
    assert alone.cycle() == monitoring.WAITING
    time.sleep(0.1)
    assert alone.cycle() == ""
    window = alone.status()["window"]
    assert (window["workers"], window["workers_expected"]) == (1, 2)
    assert window["worker_pids"] == [os.getpid()] and window["rows"] == 300


def test_prediction_drift_tests_the_live_answers_and_the_canarys_apart(tmp_path: Path) -> None:
    """Rows the candidate answered (the canary) are in the feature tests, not in the live
    model's prediction test; the candidate's answers get a test of their own."""
    from serving.routing import CANDIDATE, LIVE

    reference = small_reference()
    data = diamonds_with_gaps().sample(1_000, random_state=3)
    price = data["price"].to_numpy()
    monitor = monitoring.Monitor(
        reference, enabled=True, window=2_000, min_rows=100, folder=tmp_path
    )
    monitor.record(as_records(data.iloc[:700]), [{"prediction": p} for p in price[:700]])
    canary = price[700:] * 3  # a candidate whose answers are far off
    monitor.record(as_records(data.iloc[700:]), list(canary), route=CANDIDATE)
    monitor.record(data[FEATURES].iloc[:0], [], route=LIVE)  # an empty frame changes nothing
    monitor.collect()
    assert monitor.cycle() == ""  # one worker: its own window is every worker's
    status = monitor.status()
    assert status["window"]["rows"] == 1_000
    assert (status["window"]["live_rows"], status["window"]["candidate_rows"]) == (700, 300)
    assert status["prediction"]["rows"] == 700 and not status["prediction"]["detected"]
    assert "prediction" not in status["drifted"]
    expected = drift.evaluate(
        reference, drift.frame_columns(data, FEATURES), price[:700], min_rows=100
    )
    assert status["prediction"]["p_value"] == pytest.approx(
        expected["prediction"]["p_value"], rel=1e-12
    )
    canary_test = status["candidate_prediction"]
    assert canary_test["rows"] == 300 and canary_test["detected"]
    assert canary_test["p_value"] == pytest.approx(
        drift.prediction_report(reference, canary, min_rows=100)["p_value"], rel=1e-12
    )
