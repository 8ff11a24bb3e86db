"""The clients honour ``Retry-After``: the pure rules (clients.http), then ``python -m clients
predict`` against a real ``bentoml serve`` whose ``/predict`` budget is 1 and held full, so
the client is shed (503 + Retry-After) until the slot frees: it retries and succeeds, or gives
up within its bounds with one readable line. No timing asserts: every wait is for a state."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from clients.http import Backoff, Retries, retry_after_seconds
from clients.service import MODEL_ENV
from tests.helpers.admission import budget_filled, shed_count
from tests.helpers.client_models import (
    FEATURE_COLUMNS,
    PROJECT_ROOT,
    PYTHON,
    diamonds_sample,
    native_predictions,
    run_clients,
    serving,
)

pytestmark = pytest.mark.timeout(300)


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 0 ") == 0.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=5), usegmt=True), now) == 5
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=5), usegmt=True), now) == 0
    for unreadable in (None, "", "soon", "-1", "1.5x"):
        assert retry_after_seconds(unreadable) is None


def test_a_delay_is_at_least_what_the_server_asks_and_bounded() -> None:
    backoff = Backoff(retries=3, base=0.25, max_wait=10)
    for _ in range(50):
        assert 2.0 <= backoff.delay(1, "2") <= 2.25  # honoured, plus a little jitter
        assert 0.125 <= backoff.delay(1) <= 0.25  # no header: exponential backoff
        assert 1.0 <= backoff.delay(4) <= 2.0


def test_retries_stop_at_their_count_or_their_total_wait() -> None:
    counted = Retries(Backoff(retries=2, base=0.01, max_wait=100))
    assert counted.next_delay("1") is not None and counted.next_delay("1") is not None
    assert counted.next_delay("1") is None
    assert counted.gave_up("HTTP 503: busy").startswith("HTTP 503: busy (gave up after 2 retries")

    timed = Retries(Backoff(retries=100, base=0.01, max_wait=5))
    assert 3 <= timed.next_delay("3") <= 3.01
    assert timed.next_delay("3") is None  # the server asks for more than is left: stop now
    assert timed.attempt == 1

    trimmed = Retries(Backoff(retries=100, base=4, cap=8, max_wait=5))
    delays = [trimmed.next_delay(), trimmed.next_delay()]
    assert delays[1] == pytest.approx(5 - delays[0])  # own backoff trimmed to the bound
    assert trimmed.next_delay() is None


@pytest.fixture(scope="module")
def shed_server(
    tmp_path_factory: pytest.TempPathFactory, client_model: dict
) -> Iterator[dict[str, Any]]:
    """A real service whose /predict admits one request at a time (budget 1)."""
    shared = {**client_model, "env": dict(client_model["env"])}
    env = {**shared["env"], MODEL_ENV: shared["tag"], "TAGSERVE_PREDICT_QUEUE": "0"}
    row = diamonds_sample(1, seed=11)
    record = row[FEATURE_COLUMNS].to_dict("records")[0]  # plain Python values (pandas 2)
    log = tmp_path_factory.mktemp("shed-server") / "server.log"
    with serving(env, log) as server:
        yield {
            "url": server.url,
            "env": shared["env"],
            "record": record,
            "prediction": float(native_predictions(shared["model_dir"], row)[0]),
        }


def test_predict_retries_after_503_and_succeeds(shed_server: dict[str, Any]) -> None:
    url, record = shed_server["url"], shed_server["record"]
    with budget_filled(url, record) as held:
        before = shed_count(url)
        client = subprocess.Popen(
            [PYTHON, "-m", "clients", "predict", json.dumps(record), "--url", url],
            cwd=PROJECT_ROOT,
            env=shed_server["env"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            while shed_count(url) == before:  # until the client has been shed once
                assert client.poll() is None, client.communicate()
                time.sleep(0.05)
            assert held.finish()[0] == 200
            out, err = client.communicate(timeout=120)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    assert client.returncode == 0, err
    assert json.loads(out) == {"prediction": shed_server["prediction"]}


def test_predict_gives_up_within_its_bounds_in_one_line(shed_server: dict[str, Any]) -> None:
    url, record = shed_server["url"], shed_server["record"]
    with budget_filled(url, record):
        done = run_clients(
            "predict",
            json.dumps(record),
            "--url",
            url,
            "--retries",
            "2",
            "--max-wait",
            "30",
            env=shed_server["env"],
        )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: HTTP 503: overloaded: /predict already has 1 requests")
    assert "(gave up after 2 retries" in line
