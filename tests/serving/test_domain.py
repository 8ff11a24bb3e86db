"""The model's domain on every route: a category the model never learnt (or in another case)
and a number outside the bounds the pipeline's rules put on its training data get a 400 naming
the column, the value and what the column takes; with TAGSERVE_UNKNOWN_CATEGORIES=accept and
TAGSERVE_OUT_OF_RANGE=accept they are served as before. The document and /metadata show it."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from inference.domain import OUT_OF_RANGE_ENV, UNKNOWN_CATEGORIES_ENV
from inference.envvars import scoped_env
from tests.helpers.service_models import Models, bentoml_home, load_service, records

CUTS = "'Fair', 'Good', 'Very Good', 'Premium', 'Ideal'"
# (field, value, what the 400 says of it); the diamonds model's domain, as the shipped
# config and the fitted Pipeline give it.
OUTSIDE = [
    ("cut", "Superb", f"'Superb' is not one of {CUTS}"),
    ("cut", "ideal", f"'ideal' is not one of {CUTS}"),
    ("carat", -5, "-5 is out of the model's range (it takes at least 0.1 and at most 6)"),
]
IDS = ["unknown-category", "wrong-case", "negative-carat"]


def app_client(service: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette's test client on httpx
        from starlette.testclient import TestClient

        return TestClient(service.Tagserve.to_asgi())


@pytest.fixture(scope="module")
def home(models: Models) -> Iterator[Models]:
    with bentoml_home(models.bentoml_home):
        yield models


@pytest.fixture(scope="module")
def client(home: Models) -> Iterator[Any]:
    with app_client(load_service(home.regressor)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def rows(home: Models) -> list[dict[str, Any]]:
    return records(home.example(home.regressor))


@pytest.mark.parametrize(("column", "value", "problem"), OUTSIDE, ids=IDS)
def test_outside_the_domain_is_a_400_naming_column_value_and_domain_on_every_route(
    client: Any, rows: list[dict[str, Any]], column: str, value: Any, problem: str
) -> None:
    bad = {**rows[0], column: value}
    answer = client.post("/predict", json=bad)
    assert answer.status_code == 400, answer.text
    assert f"{column}: {problem}" in answer.json()["error"], answer.text
    answer = client.post("/predict_batch", json=[rows[0], rows[1], bad])
    assert answer.status_code == 400, answer.text
    assert f"[2].{column}: {problem}" in answer.json()["error"], answer.text
    answer = client.post("/invocations", json={"dataframe_records": [rows[0], bad]})
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"].endswith(f"column '{column}' in row 1: {problem}")
    csv = pd.DataFrame([rows[0], rows[1], bad]).to_csv(index=False)
    answer = client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
    assert answer.status_code == 400, answer.text
    # a CSV body's third data row is row 3, as a person counts
    assert answer.json()["message"].endswith(f"column '{column}' in row 3: {problem}")
    assert client.post("/predict", json=rows[0]).status_code == 200


def test_within_the_domain_and_null_where_optional_are_served(
    client: Any, rows: list[dict[str, Any]]
) -> None:
    """The bounds themselves are inside (inclusive), every trained category is taken."""
    edge = [{**rows[0], "carat": 0.1, "cut": "Fair"}, {**rows[0], "carat": 6.0, "cut": "Ideal"}]
    answer = client.post("/predict_batch", json=edge)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()) == 2


def test_the_document_and_metadata_show_the_domain(client: Any) -> None:
    """Enums for the closed columns, bounds for the numbers, in the Record schema and in
    /invocations' columns; /metadata has the recorded domain and what is enforced."""
    document = client.get("/docs.json").json()
    record = document["components"]["schemas"]["Record"]["properties"]
    assert record["cut"]["enum"] == ["Fair", "Good", "Very Good", "Premium", "Ideal"]
    assert record["clarity"]["enum"][0] == "I1"
    assert (record["carat"]["minimum"], record["carat"]["maximum"]) == (0.1, 6.0)
    assert (record["x"]["minimum"], record["x"]["maximum"]) == (0.1, 20.0)
    meta = client.get("/metadata").json()
    assert meta["domain"]["columns"]["cut"] == {"categories": record["cut"]["enum"]}
    assert meta["domain"]["columns"]["carat"] == {"minimum": 0.1, "maximum": 6.0}
    assert meta["domain"]["enforced"] == {"unknown_categories": "refuse", "out_of_range": "refuse"}


def test_accepted_outside_the_domain_is_served_as_before(
    home: Models, rows: list[dict[str, Any]]
) -> None:
    """TAGSERVE_UNKNOWN_CATEGORIES=accept and TAGSERVE_OUT_OF_RANGE=accept: the same records
    get their predictions (the model's own answer to them), on each route's entry; the
    document lists no enum and no domain bound; /metadata still shows the domain. (In
    process, without HTTP: a second ASGI app here would register BentoML's metrics twice.)"""
    import asyncio

    from serving.protocol import parse_invocation

    with scoped_env(**{UNKNOWN_CATEGORIES_ENV: "accept", OUT_OF_RANGE_ENV: "accept"}):
        built = load_service(home.regressor)
    assert UNKNOWN_CATEGORIES_ENV not in os.environ
    service = built.Tagserve()
    for column, value, _ in OUTSIDE:
        bad = {**rows[0], column: value}
        single = asyncio.run(service.predict(built.Record(**bad))).prediction
        batch = service.predict_batch([built.Record(**rows[0]), built.Record(**bad)])
        frame = parse_invocation(
            pd.DataFrame([bad]).to_csv(index=False).encode(), "text/csv", service.contract
        )
        native = service.model.pipeline.predict(frame)
        assert batch[1].prediction == single == native[0]
    record = built.Tagserve.inner.openapi_document["components"]["schemas"]["Record"]
    assert "enum" not in record["properties"]["cut"]
    assert record["properties"]["carat"]["minimum"] < -1e29
    domain = service.describe().domain
    assert domain["enforced"] == {"unknown_categories": "accept", "out_of_range": "accept"}
    assert "cut" in domain["columns"]


def test_a_bad_setting_is_refused_in_one_line() -> None:
    from serving.settings import Settings

    with (
        scoped_env(**{UNKNOWN_CATEGORIES_ENV: "maybe"}),
        pytest.raises(ValueError, match="TAGSERVE_UNKNOWN_CATEGORIES must be accept or refuse"),
    ):
        Settings.from_env()


def test_under_adaptive_batching_only_the_request_outside_the_domain_fails(
    server: str, models: Models
) -> None:
    """A real `bentoml serve`: 16 concurrent /predict_batch requests, every fourth holding a
    record outside the domain. Each is refused on its own (validation comes before the
    batcher merges requests), and every other request gets its predictions."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    rows = records(models.example(models.regressor))

    def send(i: int) -> httpx.Response:
        body = [rows[i % len(rows)], rows[(i + 1) % len(rows)]]
        if i % 4 == 0:
            body[1] = {**body[1], "cut": "Superb"}
        return httpx.post(f"{server}/predict_batch", json=body, timeout=60)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, range(16)))
    for i, answer in enumerate(answers):
        if i % 4 == 0:
            assert answer.status_code == 400, answer.text
            assert "[1].cut: 'Superb' is not one of" in answer.json()["error"]
        else:
            assert answer.status_code == 200, answer.text
            assert len(answer.json()) == 2
