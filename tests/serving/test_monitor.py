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
