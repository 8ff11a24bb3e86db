"""Limits that hold for one request, and one log line per client error, against a real
``bentoml serve``: a request within the documented limits is answered however slow the model
(adaptive batching never splits it, so never cuts it), a 503 means overload and carries
``Retry-After``, and a client's mistake is one line in the server log, never a traceback."""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.marks import starts_server
from tests.helpers.service_models import (
    PROJECT_ROOT,
    Models,
    bentoml_server,
    subprocess_env,
)
from tests.helpers.shapes import SHAPES

ROWS = 40_000  # TAGSERVE_MAX_ROWS of the slow server: one call long enough to queue behind

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
@starts_server
def slow_server(
    shaped: dict[str, str], models: Models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The text model (served by scikit-learn: TF-IDF, no fast path) with a latency budget of
    1 ms, which any model call outlasts, and one model call at a time: a running call holds
    every request behind it."""
    log = tmp_path_factory.mktemp("slow-server") / "bentoml-serve.log"
    env = subprocess_env(
        models,
        TAGSERVE_MODEL=shaped["text"],
        TAGSERVE_MAX_LATENCY_MS="1",
        TAGSERVE_BATCH_CALLS="1",
        TAGSERVE_MAX_ROWS=str(ROWS),
    )
    with bentoml_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as url:
        yield url


def big_body() -> list[dict[str, object]]:
    frame = SHAPES["text"]().frame.drop(columns="rating")
    rows = frame.sample(ROWS, replace=True, random_state=0).to_dict("records")
    return [{k: (None if v != v else v) for k, v in r.items()} for r in rows]  # NaN -> null


def test_a_large_request_alone_is_answered_however_slow_the_model(slow_server: str) -> None:
    """40,000 records (its TAGSERVE_MAX_ROWS) in one predict_batch body, on an idle server
    whose batching budget is 1 ms: answered whole (BentoML cut it into 256-row calls and
    answered 503 once the request was older than the budget)."""
    body = big_body()
    for _ in range(2):  # the batcher's first calls train its latency model: not special
        answer = httpx.post(f"{slow_server}/predict_batch", json=body, timeout=120)
        assert answer.status_code == 200, answer.text[:500]
        assert len(answer.json()) == ROWS


def model_calls(url: str) -> int:
    """The predict_batch model calls this (one) worker has started (``/metadata``)."""
    return httpx.get(f"{url}/metadata", timeout=30).json()["batching"]["model_calls"]


def test_overload_is_a_503_with_retry_after(slow_server: str) -> None:
    """Requests queued behind a running model call for longer than the budget are shed: 503,
    with Retry-After and a readable error. Once the large call has started (``/metadata``
    counts it), single-record requests are sent one after another until it ends: each waits
    behind it."""
    body = big_body()
    small = body[:1]
    # Warm requests first: the first calls of a worker load what they need.
    with httpx.Client(timeout=120) as client:
        for _ in range(20):
            assert client.post(f"{slow_server}/predict_batch", json=small).status_code == 200
    before = model_calls(slow_server)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        big = pool.submit(httpx.post, f"{slow_server}/predict_batch", json=body, timeout=120)
        deadline = time.monotonic() + 60
        while model_calls(slow_server) == before and time.monotonic() < deadline:
            time.sleep(0.002)
        shed = []
        with httpx.Client(timeout=120) as client:
            while not big.done():
                shed.append(client.post(f"{slow_server}/predict_batch", json=small))
        assert big.result().status_code == 200
    refused = [a for a in shed if a.status_code == 503]
    assert refused, [a.status_code for a in shed]
    for answer in refused:
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.json()["error"].startswith("overloaded")
    assert {a.status_code for a in shed} <= {200, 503}


@pytest.fixture(scope="module")
@starts_server
def logged_server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    log = tmp_path_factory.mktemp("logged-server") / "bentoml-serve.log"
    env = subprocess_env(models, TAGSERVE_MODEL=models.regressor)
    with bentoml_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as url:
        yield url, log


def test_each_client_error_is_one_log_line_without_traceback(logged_server: tuple) -> None:
    url, log = logged_server
    before = Path(log).read_text(errors="replace")
    bad = [
        ("/predict", {"carat": "heavy"}),
        ("/predict_batch", [{"carat": 0.3}]),
        ("/invocations", {"dataframe_records": [{"carat": "heavy"}]}),
        ("/predict", [1, 2]),
    ]
    for route, body in bad:
        assert httpx.post(f"{url}{route}", json=body, timeout=30).status_code == 400
    assert httpx.post(f"{url}/predict", content=b"{", timeout=30).status_code == 400
    time.sleep(1)  # the log is written by the worker
    added = Path(log).read_text(errors="replace")[len(before) :]
    assert "Traceback" not in added, added
    lines = re.findall(r"POST (/\w+) 400: (.*)", added)
    assert [route for route, _ in lines] == [r for r, _ in bad] + ["/predict"], added
    named = ["carat", "depth", "depth", "object", "JSON"]  # what each error names
    assert all(word in message for word, (_, message) in zip(named, lines, strict=True)), lines
