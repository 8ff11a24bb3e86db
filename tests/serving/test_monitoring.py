"""Live monitoring against real parts: a ``bentoml serve`` with 2 workers testing its traffic
every second, a real Prometheus scraping it with the shipped rules, promtool on the shipped
files, and the report page in headless Chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from inference import drift
from serving import monitoring
from serving.metrics import monitor_metrics
from tests.helpers.monitoring import (
    FEATURES,
    MonitoredModel,
    as_records,
    diamonds_with_gaps,
    replay,
    window_since,
)
from tests.helpers.servers import free_port, start_process
from tests.helpers.service_models import PROJECT_ROOT, Models

PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"
WINDOW = 1_000
NUMBERS = ["carat", "depth", "table", "x", "y", "z"]


def drawn(train: pd.DataFrame, seed: int, rows: int = 1_200) -> pd.DataFrame:
    """Rows drawn (seeded) from the model's training data."""
    return train.sample(rows, random_state=seed).reset_index(drop=True)


# --- the window, the leader and the queue, in-process ------------------------------------------


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
    expected = drift.evaluate(
        reference,
        drift.frame_columns(data.iloc[100:], FEATURES),
        data["price"].to_numpy()[100:],
        min_rows=10,
    )
    for name in FEATURES:
        assert status["features"][name]["p_value"] == pytest.approx(
            expected["features"][name]["p_value"], rel=1e-12
        )


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


def test_an_unmonitored_service_says_why(server: str, models: Models) -> None:
    """The session's regressor was imported from a store with no clean_data:reference."""
    status = httpx.get(f"{server}/monitoring", timeout=10).json()
    assert status["enabled"] is False
    assert "no drift reference" in status["reason"] and "clean_data:reference" in status["reason"]
    page = httpx.get(f"{server}/monitoring/report", timeout=10)
    assert page.status_code == 200 and "Not monitored" in page.text
    off = SimpleNamespace(
        monitor=False,
        monitor_window=10,
        monitor_min_rows=1,
        monitor_every_s=1,
        monitor_dir=None,
        workers=1,
    )
    folder = models.mlflow_folder(models.regressor).parent
    assert monitoring.Monitor.for_model(folder, off).status() == {
        "enabled": False,
        "reason": "turned off (TAGSERVE_MONITOR=off)",
    }


# --- detection by a real bentoml serve with 2 workers --------------------------------------


def test_training_rows_flag_nothing_over_20_windows(
    monitored_server: str, monitored: MonitoredModel
) -> None:
    """20 windows of rows drawn from the training data: at most one window flags anything
    (the family-wise rate is 5 %: offline, 8 of 200 such windows flagged something), and the
    routes and both workers all feed the window."""
    false_alarms, workers = [], set()
    for seed in range(20):
        rows = drawn(monitored.train, seed)
        if seed == 0:  # /invocations and /predict feed the window too
            since = time.time()
            split = rows[FEATURES].iloc[:600]
            body = {"dataframe_split": split.to_dict(orient="split", index=False)}
            body["dataframe_split"]["data"] = [
                [None if isinstance(v, float) and np.isnan(v) else v for v in row]
                for row in body["dataframe_split"]["data"]
            ]
            answer = httpx.post(f"{monitored_server}/invocations", json=body, timeout=60)
            assert answer.status_code == 200, answer.text
            with httpx.Client(base_url=monitored_server, timeout=30) as client:
                for record in as_records(rows.iloc[600:])[:400]:
                    assert client.post("/predict", json=record).status_code == 200
        else:
            since = replay(monitored_server, as_records(rows))
        status = window_since(monitored_server, since, WINDOW)
        workers.add(status["window"]["workers"])
        if status["drifted"]:
            false_alarms.append((seed, status["drifted"]))
    assert len(false_alarms) <= 1, false_alarms
    assert max(workers) == 2  # both workers' windows were merged


def test_a_scaled_feature_is_flagged_within_one_window(
    monitored_server: str, monitored: MonitoredModel
) -> None:
    rows = drawn(monitored.train, 100)
    rows["carat"] = rows["carat"] * 1.3
    status = window_since(monitored_server, replay(monitored_server, as_records(rows)), WINDOW)
    assert "carat" in status["drifted"]
    assert status["features"]["carat"]["detected"] is True
    assert set(status["drifted"]) <= {"carat", "prediction"}  # x, y, z, cut... unchanged
    metrics = httpx.get(f"{monitored_server}/metrics", timeout=10).text
    assert 'tagserve_drift_detected{feature="carat"} 1.0' in metrics
    assert 'tagserve_drift_detected{feature="cut"} 0.0' in metrics
    assert "tagserve_monitor_window_rows 1000.0" in metrics


def test_a_new_category_raises_its_unknown_ratio(
    monitored_server: str, monitored: MonitoredModel
) -> None:
    rows = drawn(monitored.train, 101)
    rows.loc[rows.index % 10 == 0, "cut"] = "Astonishing"
    status = window_since(monitored_server, replay(monitored_server, as_records(rows)), WINDOW)
    cut = status["features"]["cut"]
    assert cut["unknown_category_ratio"] == pytest.approx(0.1, abs=0.02)
    assert cut["unknown_categories"] == ["Astonishing"]
    assert status["features"]["clarity"]["unknown_category_ratio"] == 0.0
    metrics = httpx.get(f"{monitored_server}/metrics", timeout=10).text
    line = next(
        m
        for m in metrics.splitlines()
        if m.startswith('tagserve_input_unknown_category_ratio{feature="cut"}')
    )
    assert float(line.split()[-1]) == cut["unknown_category_ratio"]


def test_a_column_sent_empty_raises_its_missing_ratio(
    monitored_server: str, monitored: MonitoredModel
) -> None:
    rows = drawn(monitored.train, 102)
    rows["depth"] = np.nan
    status = window_since(monitored_server, replay(monitored_server, as_records(rows)), WINDOW)
    depth = status["features"]["depth"]
    assert depth["missing_ratio"] == 1.0 and depth["p_value"] is None
    assert status["features"]["color"]["missing_ratio"] < 0.1
    metrics = httpx.get(f"{monitored_server}/metrics", timeout=10).text
    assert 'tagserve_input_missing_ratio{feature="depth"} 1.0' in metrics


# --- Prometheus ---------------------------------------------------------------------------


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install prometheus / chromium)")
    return path


def test_promtool_checks_the_shipped_config_and_rules() -> None:
    promtool = tool("promtool")
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "rules.yml"],
        ["test", "rules", "rules_test.yml"],
    ):
        done = subprocess.run(
            [promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


@contextlib.contextmanager
def prometheus(target: str, folder: Path) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1 with the shipped config and rules, scraping ``target``
    every second: its URL."""
    binary = tool("prometheus")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / "rules.yml")]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    server = start_process(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        url=f"http://127.0.0.1:{port}",
        ready_path="/-/ready",
        env={"PATH": "/usr/bin:/bin"},
        cwd=folder,
        log=folder / "prometheus.log",
        timeout=60,
    )
    try:
        yield server.url
    finally:
        server.stop()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_prometheus_reads_the_series_and_the_drift_alert_fires(
    monitored_server: str, monitored: MonitoredModel, tmp_path: Path
) -> None:
    target = monitored_server.removeprefix("http://")
    with prometheus(target, tmp_path) as url:
        rows = drawn(monitored.train, 200)
        rows["table"] = rows["table"] * 1.3
        window_since(monitored_server, replay(monitored_server, as_records(rows)), WINDOW)
        deadline, firing = time.monotonic() + 150, []
        while time.monotonic() < deadline and not firing:
            alerts = httpx.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
            firing = [
                a
                for a in alerts
                if a["labels"]["alertname"] == "TagserveFeatureDrift" and a["state"] == "firing"
            ]
            time.sleep(2)
        assert [a["labels"]["feature"] for a in firing] == ["table"], alerts
        p_values = {r["metric"]["feature"]: r for r in query(url, "tagserve_drift_p_value")}
        assert set(p_values) == set(FEATURES)  # one series per feature, whatever the workers
        assert all(r["metric"]["job"] == "tagserve" for r in p_values.values())
        assert query(url, "tagserve_monitor_window_rows")[0]["value"][1] == str(WINDOW)
        assert query(url, "tagserve_prediction_drift_p_value")
        assert query(url, "tagserve_monitor_dropped_rows_total")[0]["value"][1] == "0"


# --- the report page in a browser ---------------------------------------------------------


def chromium(*args: str) -> subprocess.CompletedProcess:
    binary = tool("chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    return subprocess.run(
        [binary, *flags, "--no-first-run", *args], capture_output=True, text=True, timeout=120
    )


def test_the_report_page_shows_every_feature_in_chromium(
    monitored_server: str, monitored: MonitoredModel, tmp_path: Path
) -> None:
    rows = drawn(monitored.train, 300)
    rows["carat"] = rows["carat"] * 1.3
    rows.loc[rows.index % 10 == 0, "cut"] = "Astonishing"
    status = window_since(monitored_server, replay(monitored_server, as_records(rows)), WINDOW)
    drifted = [n for n in status["drifted"] if n != "prediction"]
    assert {"carat", "cut"} <= set(drifted)
    url = f"{monitored_server}/monitoring/report"
    page = httpx.get(url, timeout=10)
    assert page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text and "http://" not in page.text.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )  # no script, nothing fetched from elsewhere
    dom = chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name in [*FEATURES, "prediction"]:
        assert f'id="feature-{name}"' in dom.stdout, name
    where = {n: dom.stdout.index(f'id="feature-{n}"') for n in FEATURES}
    steady = [where[n] for n in FEATURES if n not in drifted]
    assert max(where[n] for n in drifted) < min(steady)  # drifted features first
    assert dom.stdout.count("<svg") == len(FEATURES) + 1
    assert "Astonishing" in dom.stdout
    # The docs' picture (docs/monitoring.md): TAGSERVE_REPORT_SCREENSHOT=docs/monitoring-report.png.
    screenshot = Path(os.environ.get("TAGSERVE_REPORT_SCREENSHOT") or tmp_path / "report.png")
    shot = chromium(f"--screenshot={screenshot}", "--window-size=1200,2000", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.stat().st_size > 20_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unwritable_shared_folder_leaves_the_service_unmonitored(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monitor = monitoring.Monitor(small_reference(), enabled=True, folder=blocker / "monitor")
    monitor.start()
    assert monitor.thread is None
    status = monitor.status()
    assert status["enabled"] is False and "cannot write" in status["reason"]
    monitor.record([{"carat": 1.0}], [1.0])  # still never raises


def test_monitoring_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.settings import Settings

    defaults = Settings.from_env()
    assert (defaults.monitor, defaults.monitor_every_s, defaults.monitor_window) == (
        True,
        30.0,
        5_000,
    )
    monkeypatch.setenv("TAGSERVE_MONITOR", "off")
    monkeypatch.setenv("TAGSERVE_MONITOR_EVERY", "0.5")
    monkeypatch.setenv("TAGSERVE_MONITOR_WINDOW", "2000")
    monkeypatch.setenv("TAGSERVE_MONITOR_DIR", "/tmp/shared")
    got = Settings.from_env()
    assert (got.monitor, got.monitor_every_s, got.monitor_window, got.monitor_dir) == (
        False,
        0.5,
        2_000,
        "/tmp/shared",
    )
    for name, bad, why in (
        ("TAGSERVE_MONITOR", "sometimes", "must be on or off"),
        ("TAGSERVE_MONITOR_EVERY", "0", "must be more than 0 seconds"),
        ("TAGSERVE_MONITOR_EVERY", "soon", "must be a number of seconds"),
        ("TAGSERVE_MONITOR_WINDOW", "0", "must be at least 1"),
    ):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=f"{name} {why}"):
            Settings.from_env()
        monkeypatch.delenv(name)


def test_another_worker_leads_when_the_leader_dies(
    monitored_server: str, monitored: MonitoredModel
) -> None:
    """SIGKILL the worker that tests the window: another takes the lock and keeps testing
    (last: the server restarts the killed worker)."""
    import signal

    before = httpx.get(f"{monitored_server}/monitoring", timeout=10).json()
    os.kill(before["leader_pid"], signal.SIGKILL)
    rows = drawn(monitored.train, 400)
    deadline, status = time.monotonic() + 90, before
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, AssertionError):
            since = replay(monitored_server, as_records(rows))
            status = window_since(monitored_server, since, WINDOW, timeout=20)
            if status["leader_pid"] != before["leader_pid"]:
                break
    assert status["leader_pid"] != before["leader_pid"], status.get("evaluated_at")
    assert status["evaluated_at"] > before["evaluated_at"] and status["window"]["rows"] == WINDOW


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
