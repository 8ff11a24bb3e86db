"""Load shedding on ``/predict`` (serving.admission) behind a real ``bentoml serve`` on
127.0.0.1 with a budget of 1 (``TAGSERVE_PREDICT_QUEUE=0``): past the budget a 503 with
``Retry-After`` at once, accepted requests answered right, the other APIs never shed by it.
The budget is filled deterministically by a request whose body is held back; no timing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.helpers.admission import bentoml_503_count, budget_filled, shed_count
from tests.helpers.marks import starts_server
from tests.helpers.service_models import (
    PROJECT_ROOT,
    Models,
    bentoml_server,
    records,
    subprocess_env,
)

RETRY_AFTER = "2"
BURST = 24

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
@starts_server
def server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("shedding") / "bentoml-serve.log"
    env = subprocess_env(
        models,
        TAGSERVE_MODEL=models.regressor,
        TAGSERVE_PREDICT_QUEUE="0",
        TAGSERVE_RETRY_AFTER=RETRY_AFTER,
        # The held request's body stays incomplete for the whole test, on purpose.
        TAGSERVE_REQUEST_READ_SECONDS="120",
    )
    with bentoml_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as url:
        yield url


@pytest.fixture(scope="module")
def rows(models: Models) -> dict[str, Any]:
    """The model's example rows and their in-process predictions."""
    from inference.loading import load_pipeline

    model = load_pipeline(models.mlflow_folder(models.regressor))
    model.set_params(model__n_jobs=1)
    example = records(models.example(models.regressor))
    return {"records": example, "predictions": model.predict(pd.DataFrame(example)).tolist()}


def test_past_the_budget_predict_answers_503_with_retry_after(
    server: str, rows: dict[str, Any]
) -> None:
    record, want = rows["records"][0], rows["predictions"][0]

    async def burst(route: str, body: Any) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server, timeout=60) as client:
            return await asyncio.gather(*(client.post(route, json=body) for _ in range(8)))

    with budget_filled(server, record) as held:
        before = shed_count(server)
        shed = asyncio.run(burst("/predict", record))
        assert [a.status_code for a in shed] == [503] * 8
        assert shed_count(server) - before == 8  # counted in /metrics
        # Refused before BentoML's own middleware (request metrics, tracing, access log):
        # a refusal costs next to nothing.
        assert bentoml_503_count(server) == 0
        for answer in shed:
            assert answer.headers["retry-after"] == RETRY_AFTER
            assert answer.headers["content-type"] == "application/json"
            error = answer.json()["error"]
            assert error.startswith("overloaded: /predict already has 1 requests in flight")
            assert f"retry after {RETRY_AFTER} s" in error
        # The budget is /predict's own: the throughput APIs and metadata still answer.
        batch = asyncio.run(burst("/predict_batch", rows["records"]))
        assert [a.status_code for a in batch] == [200] * 8
        assert [p["prediction"] for p in batch[0].json()] == rows["predictions"]
        assert httpx.get(f"{server}/metadata", timeout=30).status_code == 200
        split = {"dataframe_records": rows["records"]}
        assert httpx.post(f"{server}/invocations", json=split, timeout=30).status_code == 200
        # The held request was admitted: it is answered once its body is complete.
        assert held.finish() == (200, {"prediction": want})
    # Its slot is free again.
    again = httpx.post(f"{server}/predict", json=record, timeout=30)
    assert (again.status_code, again.json()) == (200, {"prediction": want})


def test_a_concurrent_burst_gets_answers_or_503s_never_errors(
    server: str, rows: dict[str, Any]
) -> None:
    """Unheld concurrent clients: whoever is admitted gets the right prediction, the others
    a 503 with Retry-After (how many of each depends on the machine: not asserted)."""
    examples = list(zip(rows["records"], rows["predictions"], strict=True))
    sent = [examples[i % len(examples)] for i in range(BURST)]
    before = shed_count(server)

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=BURST)
        async with httpx.AsyncClient(base_url=server, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post("/predict", json=r) for r, _ in sent))

    answers = asyncio.run(run())
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses
    for answer, (_, want) in zip(answers, sent, strict=True):
        if answer.status_code == 200:
            assert answer.json() == {"prediction": want}
        else:
            assert answer.headers["retry-after"] == RETRY_AFTER
    assert shed_count(server) - before == statuses.count(503)  # the server counts them too
