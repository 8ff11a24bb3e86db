"""Two real ``bentoml serve`` processes on one BentoML home keep their own metrics and
monitoring: the second one's start wipes neither the first one's counters nor its window."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.monitoring import MonitoredModel, as_records, replay
from tests.helpers.servers import start_server
from tests.helpers.service_models import PROJECT_ROOT, subprocess_env

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]

ROWS = 400


def predict_count(url: str) -> float:
    """The ``/predict_batch`` requests this server counted (BentoML's request counter)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.findall(
        r'^bentoml_service_request_total\{[^}]*endpoint="/predict_batch"[^}]*'
        r'http_response_code="200"[^}]*\} ([0-9.e+]+)$',
        text,
        flags=re.M,
    )
    return sum(float(value) for value in found)


def window_tested(url: str, timeout: float = 60) -> dict:
    """``GET /monitoring`` once it has tested a window."""
    deadline, status = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/monitoring", timeout=10).json()
        if status.get("tested"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"no window tested in {timeout} s: {status}")


def test_two_servers_on_one_home_keep_their_own_metrics_and_monitoring(
    monitored: MonitoredModel, tmp_path: Path
) -> None:
    env = subprocess_env(
        monitored,  # type: ignore[arg-type]  (the homes are all it reads)
        TAGSERVE_MODEL=monitored.tag,
        TAGSERVE_MONITOR_EVERY="1",
        TAGSERVE_MONITOR_MIN_ROWS="200",
        # The training rows hold a few the domain refuses (zero sizes): served, as the
        # monitoring tests serve them, so that every request counts.
        TAGSERVE_OUT_OF_RANGE="accept",
        TAGSERVE_UNKNOWN_CATEGORIES="accept",
    )
    records = as_records(monitored.train.sample(ROWS, random_state=7))
    first = start_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=tmp_path / "a.log")
    try:
        replay(first.url, records, clients=1)
        assert predict_count(first.url) == ROWS / 100
        window_tested(first.url)
        second = start_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=tmp_path / "b.log")
        try:
            # The second start must not have wiped the first server's counters.
            assert predict_count(first.url) == ROWS / 100
            assert predict_count(second.url) == 0
            replay(second.url, records[:200], clients=1)
            assert predict_count(second.url) == 2
            assert predict_count(first.url) == ROWS / 100
            time.sleep(3)  # a few monitoring cycles of both servers
            status = window_tested(first.url)
            assert status["window"]["rows"] == ROWS
            assert window_tested(second.url)["window"]["rows"] == 200
        finally:
            second.stop()
        assert predict_count(first.url) == ROWS / 100
        assert "a cycle failed" not in (tmp_path / "a.log").read_text(errors="replace")
    finally:
        first.stop()
