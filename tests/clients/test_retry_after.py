"""The clients honour ``Retry-After`` (its rules: test_retry_policy.py): ``python -m clients
predict`` against a real ``bentoml serve`` whose ``/predict`` budget is 1 and held full, so
the client is shed (503 + Retry-After) until the slot frees: it retries and succeeds, or gives
up within its bounds with one readable line. No timing asserts: every wait is for a state."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

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
from tests.helpers.marks import starts_server

pytestmark = [pytest.mark.timeout(300), pytest.mark.server]


@pytest.fixture(scope="module")
@starts_server
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
