"""The model's domain on every route: a category the model never learnt (or in another case)
and a number outside the bounds the pipeline's rules put on its training data get a 400 naming
the column, the value and what the column takes; with TAGSERVE_UNKNOWN_CATEGORIES=accept and
TAGSERVE_OUT_OF_RANGE=accept they are served as before. The document and /metadata show it.

The HTTP tests of the refusing service are in test_service.py (its app is the one ASGI app a
test process may start: a second would register BentoML's metrics twice)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from inference.domain import OUT_OF_RANGE_ENV, UNKNOWN_CATEGORIES_ENV
from inference.envvars import scoped_env
from tests.helpers.domain import OUTSIDE
from tests.helpers.service_models import Models, bentoml_home, load_service, records


@pytest.fixture(scope="module")
def home(models: Models) -> Iterator[Models]:
    with bentoml_home(models.bentoml_home):
        yield models


@pytest.fixture(scope="module")
def rows(home: Models) -> list[dict[str, Any]]:
    return records(home.example(home.regressor))


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
            pd.DataFrame([bad]).to_csv(index=False).encode(), "text/csv", service.state.contract
        )
        native = service.state.models.live.pipeline.predict(frame)
        assert batch[1]["prediction"] == single == native[0]
    record = json.loads(built.Tagserve.inner.plan.openapi_body)["components"]["schemas"]["Record"]
    assert "enum" not in record["properties"]["cut"]
    assert record["properties"]["carat"]["minimum"] < -1e29
    domain = service.state.describe().domain
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
