"""The document is the behaviour on data shaped unlike diamonds: for a model of each generated
shape (``tests.helpers.shapes``: integer columns with missing values, 32 columns whose names
hold spaces and punctuation, a binary classifier with string labels, a text column) and the
shipped penguins classifier, a real ``bentoml serve`` is held to its OpenAPI document
(schemathesis, all checks), to BentoML's own clients, and to strict JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bentoml
import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

from tests.helpers.marks import starts_server
from tests.helpers.service_models import (
    PROJECT_ROOT,
    Models,
    bentoml_server,
    records,
    subprocess_env,
)
from tests.helpers.shapes import SHAPES
from tests.helpers.spec import run_schemathesis

SHAPE_KEYS = [*SHAPES, "penguins"]
EXAMPLES_PER_OPERATION = 100

pytestmark = pytest.mark.server


@pytest.fixture(scope="module", params=SHAPE_KEYS)
def shape(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
@starts_server
def shape_server(
    shape: str, shaped: dict[str, str], models: Models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """``bentoml serve service:Tagserve`` of the shape's model: (tag, URL)."""
    tag = shaped[shape]
    log = tmp_path_factory.mktemp(f"serve-{shape}") / "bentoml-serve.log"
    env = subprocess_env(models, TAGSERVE_MODEL=tag)
    with bentoml_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as url:
        yield tag, url


def strict_loads(text: str | bytes) -> Any:
    """JSON as a strict parser reads it (RFC 8259: no NaN, no Infinity)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def example_records(models: Models, tag: str) -> list[dict[str, Any]]:
    """The model's own serving example, as records, read strictly."""
    folder = models.mlflow_folder(tag)
    return records(strict_loads((folder / "serving_input_example.json").read_text()))


def invocations(url: str, rows: list[dict[str, Any]]) -> list[Any]:
    answer = httpx.post(f"{url}/invocations", json={"dataframe_records": rows}, timeout=60)
    assert answer.status_code == 200, answer.text
    return strict_loads(answer.text)["predictions"]


def sklearn_predictions(models: Models, tag: str, rows: list[dict[str, Any]]) -> list[Any]:
    """scikit-learn's predictions of ``rows`` by the model's own pipeline (missing as NaN):
    the reference every route must equal, bit for bit."""
    from inference.loading import load_pipeline

    pipeline = load_pipeline(models.mlflow_folder(tag))
    frame = pd.DataFrame.from_records(rows).replace({None: np.nan})
    return pipeline.predict(frame[list(pipeline.feature_names_in_)]).tolist()


def test_schemathesis_finds_nothing(shape_server: tuple[str, str], tmp_path: Path) -> None:
    _, url = shape_server
    run = run_schemathesis(url, tmp_path, EXAMPLES_PER_OPERATION)
    assert run.returncode == 0, run.summary
    assert run.tested and run.tested >= 12, run.summary


def test_examples_metadata_and_answers_are_strict_json(
    shape_server: tuple[str, str], models: Models
) -> None:
    tag, url = shape_server
    folder = models.mlflow_folder(tag)
    strict_loads((folder / "input_example.json").read_text())
    rows = example_records(models, tag)
    assert rows, "the serving example has rows"
    strict_loads(httpx.get(f"{url}/metadata", timeout=30).text)
    for route, body in (("/predict", rows[0]), ("/predict_batch", rows)):
        answer = httpx.post(f"{url}{route}", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        strict_loads(answer.text)
    invocations(url, rows)


def test_bentoml_clients_predict_as_invocations_and_sklearn(
    shape_server: tuple[str, str], models: Models
) -> None:
    """``bentoml.SyncHTTPClient`` and ``AsyncHTTPClient``: ``predict(record)`` and
    ``predict_batch(records)`` give /invocations' predictions, which are scikit-learn's."""
    tag, url = shape_server
    rows = example_records(models, tag)
    expected = invocations(url, rows)
    assert expected == sklearn_predictions(models, tag, rows)
    with bentoml.SyncHTTPClient(url, timeout=60) as client:
        one = [client.predict(row)["prediction"] for row in rows]
        batch = [a["prediction"] for a in client.predict_batch(rows)]
    assert one == expected and batch == expected

    async def both() -> tuple[list[Any], list[Any]]:
        async with bentoml.AsyncHTTPClient(url, timeout=60) as client:
            single = [(await client.predict(row))["prediction"] for row in rows]
            merged = await client.predict_batch(rows)
        return single, [a["prediction"] for a in merged]

    single, merged = asyncio.run(both())
    assert single == expected and merged == expected


def test_bad_input_raises_the_bentoml_client_error_with_a_4xx(
    shape_server: tuple[str, str], models: Models
) -> None:
    tag, url = shape_server
    row = example_records(models, tag)[0]
    name = next(iter(row))
    bad = {**row, name: {"not": "a value"}}
    with bentoml.SyncHTTPClient(url, timeout=60) as client:
        with pytest.raises(bentoml.exceptions.BentoMLException) as raised:
            client.predict(bad)
        assert 400 <= int(raised.value.error_code) < 500
        with pytest.raises(bentoml.exceptions.BentoMLException) as raised:
            client.predict_batch([row, bad])
        assert 400 <= int(raised.value.error_code) < 500
    answer = httpx.post(f"{url}/predict_batch", json=[row, bad], timeout=30)
    assert answer.status_code == 400 and f"[1].{name}" in answer.json()["error"]


# --- integer columns ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
@starts_server
def integer_server(
    shaped: dict[str, str], models: Models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    tag = shaped["integers"]
    log = tmp_path_factory.mktemp("serve-integers") / "bentoml-serve.log"
    env = subprocess_env(models, TAGSERVE_MODEL=tag)
    with bentoml_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as url:
        yield tag, url


def integer_rows() -> list[dict[str, Any]]:
    """Rows of the integers shape as pandas writes them: a nullable integer column holding a
    missing value becomes floats (3504.0), the others stay integers."""
    frame = SHAPES["integers"]().frame.head(6).drop(columns="mpg")
    as_floats = frame.astype({"count": "float64", "weight_lbs": "float64"})
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in as_floats.to_dict("records")
    ]


def test_whole_number_floats_score_exactly_as_the_integers(
    integer_server: tuple[str, str], models: Models
) -> None:
    """Every route takes 3504.0 in a ``long`` column as 3504 and scores it as scikit-learn
    scores the integers, CSV too; 3.5 there is a 400 naming the field and row."""
    tag, url = integer_server
    floats = integer_rows()
    assert any(isinstance(r["weight_lbs"], float) for r in floats)
    ints = [{k: int(v) if isinstance(v, float) else v for k, v in r.items()} for r in floats]
    expected = invocations(url, ints)
    assert expected == sklearn_predictions(models, tag, ints)
    assert invocations(url, floats) == expected
    batch = httpx.post(f"{url}/predict_batch", json=floats, timeout=30)
    assert [a["prediction"] for a in batch.json()] == expected
    single = [httpx.post(f"{url}/predict", json=r, timeout=30).json() for r in floats]
    assert [a["prediction"] for a in single] == expected
    csv = pd.DataFrame(floats).to_csv(index=False)  # 3504.0 and empty fields
    answer = httpx.post(
        f"{url}/invocations", content=csv, headers={"content-type": "text/csv"}, timeout=30
    )
    assert answer.status_code == 200 and answer.json()["predictions"] == expected

    fraction = [*floats[:2], {**floats[2], "model_year": 1975.5}]
    for route, body in (
        ("/predict_batch", fraction),
        ("/invocations", {"dataframe_records": fraction}),
    ):
        answer = httpx.post(f"{url}{route}", json=body, timeout=30)
        assert answer.status_code == 400, answer.text
        assert "model_year" in answer.text and "2" in answer.text and "1975.5" in answer.text
    answer = httpx.post(f"{url}/predict", json=fraction[2], timeout=30)
    assert answer.status_code == 400 and "model_year" in answer.json()["error"]
    assert orjson.loads(answer.content)["detail"][0]["loc"] == ["model_year"]
