"""The API says what it does: the OpenAPI document a real ``bentoml serve`` gives at
``/docs.json`` describes every route and every answer, checked by schemathesis (all checks, a
fixed seed, a few hundred cases per operation) against that server."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.helpers.service_models import (
    Models,
    bentoml_home,
    load_service,
)
from tests.helpers.spec import run_schemathesis

EXAMPLES_PER_OPERATION = 300


@pytest.fixture(scope="module")
def document(server: str) -> dict[str, Any]:
    answer = httpx.get(f"{server}/docs.json", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(method, path) of every operation the document lists."""
    return {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}


def test_every_route_of_the_service_is_documented(models: Models, document: dict[str, Any]) -> None:
    """BentoML's APIs, the routes mounted beside them (MLflow's and GET /metadata) and
    BentoML's infrastructure routes, each with its methods."""
    from serving.openapi import DOCUMENT_PATH
    from serving.routes import protocol_app

    with bentoml_home(models.bentoml_home):
        service = load_service(models.regressor).Tagserve
    routes = {("POST", api.route) for api in service.apis.values()}
    routes |= {(m, r.path) for r in protocol_app().routes for m in r.methods if m != "HEAD"}
    routes.discard(("GET", DOCUMENT_PATH))  # the document itself
    routes |= {("GET", p) for p in ("/livez", "/readyz", "/healthz", "/metrics")}
    assert documented(document) == routes
    assert document["openapi"].startswith("3.1")


def test_documented_answers_are_the_ones_given(server: str, document: dict[str, Any]) -> None:
    """Where the document and the answers once differed: 400's ``detail`` is a list,
    ``/metadata``'s nullable fields may be null, GET /metadata is listed, a 405 names the
    documented methods."""
    schemas = document["components"]["schemas"]
    assert schemas["Error"]["properties"]["detail"]["type"] == "array"
    bad = httpx.post(f"{server}/predict", json={"carat": 0.3})
    assert bad.status_code == 400
    assert isinstance(bad.json()["detail"], list)
    meta = httpx.get(f"{server}/metadata").json()
    assert meta["bento"] is None  # `bentoml serve service:Tagserve`: no bento
    assert {"type": "null"} in schemas["Metadata"]["properties"]["bento"]["anyOf"]
    assert "503" in document["paths"]["/predict"]["post"]["responses"]
    refused = httpx.request("DELETE", f"{server}/metadata")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD, POST"


def test_csv_pattern_takes_the_model_example_and_refuses_missing_words(
    models: Models, document: dict[str, Any]
) -> None:
    """The CSV body's pattern holds the model's own example, and refuses, in a required text
    column, each word pandas reads as missing (the service would refuse it: 400)."""
    from serving.openapi import PANDAS_NA_WORDS

    content = document["paths"]["/invocations"]["post"]["requestBody"]["content"]
    pattern = re.compile(content["text/csv"]["schema"]["pattern"])
    split = models.example(models.regressor)["dataframe_split"]
    frame = pd.DataFrame(split["data"], columns=split["columns"])
    csv = frame.to_csv(index=False)
    assert pattern.search(csv), csv
    for word in PANDAS_NA_WORDS:
        assert pd.read_csv(io.StringIO(f"cut\n{word}\n"), dtype=str)["cut"].isna().all(), word
        missing = frame.assign(cut=word).to_csv(index=False)
        assert not pattern.search(missing), word


def test_schemathesis_finds_no_failure(
    server: str, document: dict[str, Any], tmp_path: Path
) -> None:
    """Every check schemathesis has, on every documented operation: examples, the coverage
    probes (bad types, missing fields, wrong content types, undocumented methods) and
    fuzzing, positive and negative. Zero failures."""
    run = run_schemathesis(server, tmp_path, EXAMPLES_PER_OPERATION)
    assert run.returncode == 0, run.summary
    assert run.tested == len(documented(document)), run.summary


def test_a_classifier_document_has_its_classes_and_nullable_columns(models: Models) -> None:
    """Built in process for the classifier (optional columns, class labels): a column MLflow
    says may be missing may be null in every JSON form and empty in CSV; predictions are
    labels; answers carry the class probabilities."""
    with bentoml_home(models.bentoml_home):
        service = load_service(models.classifier).Tagserve
    document = json.loads(service.inner.plan.openapi_body)  # what GET /docs.json answers
    schemas = document["components"]["schemas"]
    record = schemas["Record"]
    assert {"type": "null"} in record["properties"]["sex"]["anyOf"]
    assert "sex" not in record["required"] and "island" in record["required"]
    assert "probabilities" in schemas["Prediction"]["properties"]
    invocations = document["paths"]["/invocations"]["post"]
    answer = invocations["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["properties"]["predictions"]["items"]["type"] == "string"
    split = models.example(models.classifier)["dataframe_split"]
    frame = pd.DataFrame(split["data"], columns=split["columns"]).assign(sex=None)
    pattern = invocations["requestBody"]["content"]["text/csv"]["schema"]["pattern"]
    assert re.search(pattern, frame.to_csv(index=False))
