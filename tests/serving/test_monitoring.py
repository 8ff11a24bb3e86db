"""Live monitoring against real parts: a ``bentoml serve`` with 2 workers testing its traffic
every second, a real Prometheus scraping it with the shipped rules, and the report page in
headless Chromium. (The monitor in-process: test_monitor.py.)"""

from __future__ import annotations

import contextlib
import os
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

from serving import monitoring
from tests.helpers import marks
from tests.helpers.monitoring import (
    FEATURES,
    PROMETHEUS_DIR,
    MonitoredModel,
    as_records,
    replay,
    window_since,
)
from tests.helpers.servers import free_port, start_process
from tests.helpers.service_models import Models

WINDOW = 1_000

pytestmark = pytest.mark.server


def drawn(train: pd.DataFrame, seed: int, rows: int = 1_200) -> pd.DataFrame:
    """Rows drawn (seeded) from the model's training data."""
    return train.sample(rows, random_state=seed).reset_index(drop=True)


# --- a service without monitoring -----------------------------------------------------------


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


@contextlib.contextmanager
def prometheus(target: str, folder: Path) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1 with the shipped config and rules, scraping ``target``
    every second: its URL."""
    binary = marks.tool("prometheus")
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
    binary = marks.tool("chromium")
    marks.assert_server_marked("chromium")
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
    # The README's picture: TAGSERVE_REPORT_SCREENSHOT=docs/monitoring-report.png keeps it.
    screenshot = Path(os.environ.get("TAGSERVE_REPORT_SCREENSHOT") or tmp_path / "report.png")
    shot = chromium(f"--screenshot={screenshot}", "--window-size=1200,2000", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.stat().st_size > 20_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_another_worker_leads_when_the_leader_dies(
    monitored_server: str, monitored: MonitoredModel
) -> None:
    """SIGKILL the worker that tests the window: another takes the lock and keeps testing
    (last: the server restarts the killed worker)."""
    import signal

    rows = drawn(monitored.train, 400)
    # A window tested since this test began: its leader is alive and known.
    before = window_since(monitored_server, replay(monitored_server, as_records(rows)), WINDOW)
    os.kill(before["leader_pid"], signal.SIGKILL)
    deadline, status = time.monotonic() + 90, before
    while status["leader_pid"] == before["leader_pid"] and time.monotonic() < deadline:
        # A connection to the killed worker breaks until the server restarts it: send again.
        # Anything else (an answer other than 200, no window tested in time) fails the test.
        with contextlib.suppress(httpx.TransportError):
            since = replay(monitored_server, as_records(rows))
            left = max(deadline - time.monotonic(), 1.0)
            status = window_since(monitored_server, since, WINDOW, timeout=left)
    assert status["leader_pid"] != before["leader_pid"], status.get("evaluated_at")
    assert status["evaluated_at"] > before["evaluated_at"] and status["window"]["rows"] == WINDOW
