"""One bad record among concurrent ``predict_batch`` requests, behind a real
``bentoml serve``: adaptive batching merges the requests into one model call, and only the
request holding the bad record fails (a 400 naming it); every other gets its prediction. A
value that fails in the model is a 400 on every route."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.helpers.service_models import FRAGILE_DEPTH, Models, diamonds_sample, records

# With the bad one, 41 concurrent single-record requests: enough that the batcher merges the
# bad record into a model call with good ones.
GOOD_REQUESTS = 40
ROUNDS = 3

pytestmark = pytest.mark.server


def served_sample(models: Models, tag: str) -> tuple[list[dict[str, Any]], list[float], Any]:
    """Good rows, their in-process predictions by the model ``tag``, and the native model."""
    from inference.loading import load_pipeline

    model = load_pipeline(models.mlflow_folder(tag))
    model.set_params(model__n_jobs=1)
    columns = models.example(tag)["dataframe_split"]["columns"]
    rows = diamonds_sample(GOOD_REQUESTS)[columns].reset_index(drop=True)
    return rows.to_dict("records"), model.predict(rows).tolist(), model


@pytest.fixture(scope="module")
def sample(models: Models) -> tuple[list[dict[str, Any]], list[float], Any]:
    return served_sample(models, models.regressor)


@pytest.fixture(scope="module")
def fragile_sample(models: Models, fragile: str) -> tuple[list[dict[str, Any]], list[float], Any]:
    return served_sample(models, fragile)


def concurrently(server: str, bodies: list[Any]) -> list[httpx.Response]:
    """POST every body to /predict_batch at once."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(bodies))
        async with httpx.AsyncClient(base_url=server, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post("/predict_batch", json=b) for b in bodies))

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("served", "field", "value", "problem"),
    [
        ("", "carat", -1.7976931348623157e308, "[0].carat: -1.7976931e+308 is outside the range"),
        ("fragile_", "depth", FRAGILE_DEPTH, "[0]: the model cannot take this record (ValueError"),
    ],
    ids=["refused-by-validation", "failing-in-the-model"],
)
def test_one_bad_request_fails_alone(
    request: pytest.FixtureRequest, served: str, field: str, value: float, problem: str
) -> None:
    """41 concurrent single-record requests, one bad, three rounds: the bad one gets a 400
    naming the record, the 40 others their exact predictions, and requests were merged."""
    server = request.getfixturevalue(f"{served}server")
    rows, want, _ = request.getfixturevalue(f"{served}sample")
    before = httpx.get(f"{server}/metadata").json()["batching"]
    for round_ in range(ROUNDS):
        bad_at = (round_ * 17) % (GOOD_REQUESTS + 1)  # the bad request anywhere in the batch
        bodies: list[Any] = [[row] for row in rows]
        bodies.insert(bad_at, [{**rows[0], field: value}])
        answers = concurrently(server, bodies)
        bad = answers.pop(bad_at)
        assert bad.status_code == 400, bad.text
        assert problem in bad.json()["error"], bad.text
        assert [a.status_code for a in answers] == [200] * GOOD_REQUESTS, [
            a.text for a in answers if a.status_code != 200
        ][:3]
        assert [a.json()[0]["prediction"] for a in answers] == want
    after = httpx.get(f"{server}/metadata").json()["batching"]
    requests = after["rows"] - before["rows"]
    assert after["model_calls"] - before["model_calls"] < requests, "no request was merged"


def test_a_bad_record_among_good_ones_fails_its_own_request(
    fragile_server: str, fragile_sample: Any
) -> None:
    """Several records per request: the request holding the bad one fails naming its index;
    the concurrent requests of good records get their answers."""
    rows, want, _ = fragile_sample
    bodies: list[Any] = [rows[i : i + 4] for i in range(0, GOOD_REQUESTS, 4)]
    bodies.insert(3, [rows[0], rows[1], {**rows[2], "depth": FRAGILE_DEPTH}])
    answers = concurrently(fragile_server, bodies)
    bad = answers.pop(3)
    assert bad.status_code == 400, bad.text
    assert "[2]: the model cannot take this record" in bad.json()["error"]
    assert [a.status_code for a in answers] == [200] * len(answers)
    assert [p["prediction"] for a in answers for p in a.json()] == want


def test_a_value_that_fails_in_the_model_is_a_400_on_every_route(
    models: Models, fragile: str, fragile_server: str
) -> None:
    """A depth within every bound that the fragile model's scaler pushes past float32:
    validation takes it, the model raises; the request gets a 400 naming the record, never
    a 500. (Served by bentoml serve: a second service in this process would register
    BentoML's metrics twice.)"""
    fragile_client = httpx.Client(base_url=fragile_server, timeout=60)
    rows = records(models.example(fragile))
    bad = {**rows[0], "depth": FRAGILE_DEPTH}
    answer = fragile_client.post("/predict", json=bad)
    assert answer.status_code == 400, answer.text
    assert "the model cannot take this record (ValueError" in answer.json()["error"]
    answer = fragile_client.post("/predict_batch", json=[rows[0], bad])
    assert answer.status_code == 400, answer.text
    assert "[1]: the model cannot take this record (ValueError" in answer.json()["error"]
    answer = fragile_client.post("/invocations", json={"dataframe_records": [rows[0], bad]})
    assert answer.status_code == 400, answer.text
    assert "the model cannot take this input (ValueError" in answer.json()["message"]
    assert fragile_client.post("/predict", json=rows[0]).status_code == 200
