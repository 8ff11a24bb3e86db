"""The service behind a real ``bentoml serve service:Tagserve`` on 127.0.0.1: BentoML's own
client, raw HTTP, MLflow's own scoring-server client, bad inputs, and 32 concurrent single-row
clients through the adaptive batcher."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.helpers.service_models import (
    PROJECT_ROOT,
    Models,
    records,
)

CONCURRENT_CLIENTS = 32
# a diamond but its carat, as JSON fields and as CSV (header, row)
DIAMOND = (
    b'"depth": 61.5, "table": 55.0, "x": 4.3, "y": 4.3, "z": 2.6, '
    b'"cut": "Ideal", "color": "E", "clarity": "VS1"'
)
DIAMOND_CSV = b"depth,table,x,y,z,cut,color,clarity\n", b"61.5,55.0,4.3,4.3,2.6,Ideal,E,VS1\n"

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def expected(models: Models) -> dict[str, Any]:
    """In-process answers for the model's example rows and a sample of diamonds."""
    from inference.loading import load_pipeline
    from tests.helpers.service_models import diamonds_sample

    model = load_pipeline(models.mlflow_folder(models.regressor))
    model.set_params(model__n_jobs=1)
    split = models.example(models.regressor)["dataframe_split"]
    example = pd.DataFrame(split["data"], columns=split["columns"])
    sample = diamonds_sample(CONCURRENT_CLIENTS * 2).drop(columns=["price"])
    sample = sample[split["columns"]].reset_index(drop=True)
    return {
        "example": model.predict(example).tolist(),
        "sample_rows": sample.to_dict("records"),
        "sample": model.predict(sample).tolist(),
    }


def test_bentoml_client(models: Models, server: str, expected: dict[str, Any]) -> None:
    import bentoml

    rows = records(models.example(models.regressor))
    with bentoml.SyncHTTPClient(server, server_ready_timeout=30) as client:
        assert client.is_ready()
        assert client.predict(rows[0]) == {"prediction": expected["example"][0]}
        assert client.predict_batch(rows) == [{"prediction": p} for p in expected["example"]]
        meta = client.metadata()
    assert meta["model"] == models.regressor
    head = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert meta["git_commit"] == head


def test_mlflow_protocol_over_http(models: Models, server: str, expected: dict[str, Any]) -> None:
    example_file = models.mlflow_folder(models.regressor) / "serving_input_example.json"
    answer = httpx.post(
        f"{server}/invocations",
        content=example_file.read_bytes(),  # byte for byte what `mlflow models serve` takes
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": expected["example"]}
    split = models.example(models.regressor)["dataframe_split"]
    csv = pd.DataFrame(split["data"], columns=split["columns"]).to_csv(index=False)
    answer = httpx.post(f"{server}/invocations", content=csv, headers={"content-type": "text/csv"})
    assert answer.json() == {"predictions": expected["example"]}


def test_mlflow_scoring_client_works_unchanged(
    models: Models, server: str, expected: dict[str, Any]
) -> None:
    """MLflow's own client of ``mlflow models serve``: readiness (/ping) and invoke."""
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    host, port = server.removeprefix("http://").split(":")
    client = ScoringServerClient(host, int(port))
    client.wait_server_ready(timeout=10)
    split = models.example(models.regressor)["dataframe_split"]
    frame = pd.DataFrame(split["data"], columns=split["columns"])
    assert client.invoke(frame).get_predictions().iloc[:, 0].tolist() == expected["example"]
    assert re.match(r"^\d+\.\d+", client.get_version())


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "needle"),
    [
        ("/predict", {"carat": 0.3}, "application/json", 400, "depth: Field required"),
        ("/predict", b"{", "application/json", 400, "Invalid JSON"),
        ("/predict_batch", b"[{]", "application/json", 400, "Invalid JSON"),
        ("/predict_batch", [], "application/json", 400, "at least 1 item"),
        (
            "/invocations",
            {"dataframe_records": [{"carat": "big"}]},
            "application/json",
            400,
            "missing required column(s): 'depth', 'table', 'x', 'y', 'z', 'cut', 'color', "
            "'clarity'",
        ),
        ("/invocations", b"x", "application/octet-stream", 415, "content type"),
        ("/predict", b"{}", "multipart/form-data", 400, "boundary"),
        ("/predict_batch", b"[]", "multipart/form-data", 400, "boundary"),
        ("/metadata", b"", "multipart/form-data", 400, "boundary"),
        ("/predict", {"carat": 1e300}, "application/json", 400, "carat: 1e+300 is outside"),
        (
            "/invocations",
            b'{"dataframe_records": [{"carat": 1e309, ' + DIAMOND + b"}]}",
            "application/json",
            400,
            "column 'carat' in row 0: inf is not a finite number",
        ),
        (
            "/invocations",
            b'{"dataframe_records": [{"carat": Infinity, ' + DIAMOND + b"}]}",
            "application/json",
            400,
            "column 'carat' in row 0: inf is not a finite number",
        ),
        (
            "/invocations",
            b"carat," + DIAMOND_CSV[0] + b"inf," + DIAMOND_CSV[1],
            "text/csv",
            400,
            "column 'carat' in row 1: inf is not a finite number",  # CSV: the first data row
        ),
        ("/predict_batch", b"[" * 20_000 + b"]" * 20_000, "application/json", 400, "deeply"),
        ("/invocations", b"[" * 20_000 + b"]" * 20_000, "application/json", 400, "deeply"),
    ],
    ids=[
        "missing-field",
        "malformed",
        "malformed-batch",
        "empty-batch",
        "mlflow",
        "415",
        "multipart-predict",
        "multipart-batch",
        "multipart-metadata",
        "1e300",
        "1e309",
        "Infinity",
        "csv-inf",
        "nested-batch",
        "nested-invocations",
    ],
)
def test_bad_input_is_a_4xx_never_a_500(
    server: str, path: str, body: Any, content_type: str, status: int, needle: str
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = httpx.post(f"{server}{path}", content=raw, headers={"content-type": content_type})
    assert answer.status_code == status, answer.text
    assert needle in answer.text


def test_32_concurrent_single_row_clients_are_batched(
    server: str, expected: dict[str, Any]
) -> None:
    """32 clients at once, one row each, twice over: every answer is the in-process
    prediction of its own row (no 503), and the batcher merged requests."""
    rows, want = expected["sample_rows"], expected["sample"]

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=CONCURRENT_CLIENTS)
        async with httpx.AsyncClient(base_url=server, timeout=60, limits=limits) as client:
            await client.post("/predict_batch", json=[rows[0]])  # warm the connection pool

            async def one(row: dict[str, Any]) -> httpx.Response:
                return await client.post("/predict_batch", json=[row])

            answers: list[httpx.Response] = []
            for start in range(0, len(rows), CONCURRENT_CLIENTS):
                chunk = rows[start : start + CONCURRENT_CLIENTS]
                answers += await asyncio.gather(*(one(row) for row in chunk))
            return answers

    before = httpx.get(f"{server}/metadata").json()["batching"]
    answers = asyncio.run(run())
    assert [a.status_code for a in answers] == [200] * len(rows)
    assert [a.json()[0]["prediction"] for a in answers] == want
    after = httpx.get(f"{server}/metadata").json()["batching"]
    calls = after["model_calls"] - before["model_calls"]
    assert after["rows"] - before["rows"] == len(rows) + 1
    assert calls < len(rows), f"{len(rows) + 1} requests took {calls} model calls: no batching"


def test_health_metadata_and_openapi(models: Models, server: str) -> None:
    for path in ("/livez", "/readyz", "/healthz", "/ping", "/health"):
        assert httpx.get(f"{server}{path}").status_code == 200, path
    meta = httpx.get(f"{server}/metadata").json()
    assert meta["model"] == models.regressor and meta["bento"] is None
    spec = httpx.get(f"{server}/docs.json").json()
    assert set(spec["components"]["schemas"]["Record"]["properties"]) == set(
        models.example(models.regressor)["dataframe_split"]["columns"]
    )


@pytest.mark.parametrize("path", ["/predict_batch", "/invocations"])
def test_a_48_mb_body_is_a_413_before_it_is_parsed(models: Models, server: str, path: str) -> None:
    """A body far over the row limit (TAGSERVE_MAX_ROWS 10,000) is refused from its
    Content-Length, and a body of unknown length as it streams past the cap; the client gets
    the 413 (its body is discarded, not parsed), and the server goes on serving."""
    row = json.dumps(records(models.example(models.regressor))[0]).encode()
    body = b"[" + b",".join([row] * (48_000_000 // len(row))) + b"]"
    if path == "/invocations":
        body = b'{"dataframe_records": ' + body + b"}"
    headers = {"content-type": "application/json"}
    answer = httpx.post(f"{server}{path}", content=body, headers=headers, timeout=60)
    assert answer.status_code == 413, answer.text[:300]
    assert "TAGSERVE_MAX_BODY_BYTES" in answer.text

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    answer = httpx.post(f"{server}{path}", content=chunks(), headers=headers, timeout=60)
    assert answer.status_code == 413, answer.text[:300]
    cap = httpx.get(f"{server}/metadata").json()["limits"]["max_body_bytes"]
    assert cap < len(body) // 2
    assert httpx.post(f"{server}/predict_batch", json=[json.loads(row)]).status_code == 200


# --- a clear answer for every client mistake ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "content_type", "needle"),
    [
        ("/predict", b"", "application/json", "send one record as a JSON object"),
        ("/predict", b" \r\n", "application/json", "send one record as a JSON object"),
        ("/predict_batch", b"", "application/json", "send a JSON list of records"),
        ("/invocations", b"", "application/json", "send a JSON object (dataframe_split"),
        ("/invocations", b"\n", "text/csv", "the CSV body is empty"),
    ],
)
def test_an_empty_body_is_a_400_saying_so(
    server: str, path: str, body: bytes, content_type: str, needle: str
) -> None:
    answer = httpx.post(f"{server}{path}", content=body, headers={"content-type": content_type})
    assert answer.status_code == 400, answer.text
    message = error_message(path, answer.json())
    assert "body is empty" in message and needle in message, message
    assert "Field required" not in message


def error_message(path: str, body: dict[str, Any]) -> str:
    """The error of an answer in the route's shape (README "Error shapes"): MLflow's
    ``{"error_code", "message"}`` on /invocations, else ``{"error": ...}``."""
    if path == "/invocations":
        assert set(body) == {"error_code", "message"} and body["error_code"] == "BAD_REQUEST"
        return body["message"]
    assert "error" in body and "error_code" not in body, body
    return body["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "needle"),
    [
        ("GET", "/nothing-here", 404, "no route /nothing-here; its API page is at /docs"),
        ("POST", "/predict/extra", 404, "no route /predict/extra"),
        ("GET", "/predict", 405, "/predict does not take GET; it takes POST"),
        ("PUT", "/predict_batch", 405, "/predict_batch does not take PUT; it takes POST"),
        ("GET", "/invocations", 405, "/invocations does not take GET; it takes POST"),
        ("DELETE", "/metadata", 405, "it takes GET, HEAD, POST"),
        ("POST", "/livez", 405, "/livez does not take POST"),
    ],
)
def test_404_and_405_are_json_in_the_routes_shape(
    server: str, method: str, path: str, status: int, needle: str
) -> None:
    answer = httpx.request(method, f"{server}{path}")
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert needle in error_message(path, answer.json())
    if status == 405:
        assert answer.headers["allow"], answer.headers


def test_docs_serve_the_api_page_over_the_document(server: str) -> None:
    """``/docs`` leads to BentoML's API page (Swagger UI), which reads ``/docs.json``."""
    page = httpx.get(f"{server}/docs", follow_redirects=True)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "swagger-initializer.js" in page.text
    script = httpx.get(f"{server}/static_content/swagger-initializer.js")
    assert script.status_code == 200 and 'url: "./docs.json"' in script.text
    document = httpx.get(f"{server}/docs.json")
    assert document.status_code == 200 and document.json()["openapi"].startswith("3.1")
