"""The Open Inference Protocol (KServe V2 REST) against a real ``bentoml serve``, spoken by
clients nobody here wrote: Triton's ``tritonclient.http`` (JSON and binary, sync and asyncio)
and requests MLServer's own ``PandasCodec`` encoded (``mlserver_requests/``, written by
``benchmarks/mlserver/encode_requests.py``). On every generated data shape the answers equal
``/invocations``' bit for bit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio

from tests.helpers.marks import starts_server
from tests.helpers.service_models import (
    PROJECT_ROOT,
    Models,
    bentoml_server,
    subprocess_env,
)

pytestmark = pytest.mark.server

REQUESTS = Path(__file__).parent / "mlserver_requests"
SHAPE_KEYS = ["integers", "wide", "binary", "text", "penguins"]


def fixture(key: str) -> dict[str, Any]:
    return json.loads((REQUESTS / f"{key}.json").read_text())


def rows_frame(key: str) -> pd.DataFrame:
    split = fixture(key)["rows"]
    return pd.DataFrame(split["data"], columns=split["columns"])


def invocations(url: str, frame: pd.DataFrame) -> np.ndarray:
    body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
    answer = httpx.post(f"{url}/invocations", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return np.array(answer.json()["predictions"])


def host(url: str) -> str:
    return url.removeprefix("http://")


def name_of(tag: str) -> tuple[str, str]:
    name, _, version = tag.partition(":")
    return name, version


def triton_inputs(metadata: dict, frame: pd.DataFrame, binary: bool) -> list[Any]:
    """The rows as tritonclient tensors, typed as the model's metadata says (a number column
    holding a missing value as FP64 NaN: an integer tensor has no missing value)."""
    tensors = []
    for spec in metadata["inputs"]:
        column = frame[spec["name"]]
        datatype = spec["datatype"]
        if datatype == "BYTES":
            values = np.array([str(v).encode() for v in column], dtype=np.object_)
        elif column.isna().any() or datatype.startswith("FP"):
            values, datatype = column.to_numpy(dtype=np.float64), "FP64"
        else:
            values = column.to_numpy(dtype=triton.triton_to_np_dtype(datatype))
        tensor = triton.InferInput(spec["name"], [len(values), 1], datatype)
        tensor.set_data_from_numpy(values.reshape(-1, 1), binary_data=binary)
        tensors.append(tensor)
    return tensors


def same(got: np.ndarray, want: np.ndarray) -> None:
    """Bit for bit (numbers), or equal (labels)."""
    if want.dtype.kind == "f":
        assert got.astype(np.float64).tobytes() == want.tobytes()
    else:
        labels = [v.decode() if isinstance(v, bytes) else v for v in got.ravel().tolist()]
        assert labels == want.tolist()


# --- the session's regressor ---------------------------------------------------------------


@pytest.fixture(scope="module")
def diamonds() -> pd.DataFrame:
    """40 rows: a small request (scored through the record entry, as /predict's)."""
    return rows_frame("diamonds")


@pytest.fixture(scope="module")
def diamonds_many() -> pd.DataFrame:
    """300 distinct rows: a large request (scored as a frame, as /invocations')."""
    from tests.helpers.mlserver_rows import feature_columns
    from tests.helpers.service_models import diamonds_sample, features

    return diamonds_sample(600)[feature_columns(features("diamonds"))].head(300)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("size", ["small", "large"])
def test_tritonclient_sync_gives_invocations_predictions(
    server: str,
    models: Models,
    diamonds: pd.DataFrame,
    diamonds_many: pd.DataFrame,
    binary: bool,
    size: str,
) -> None:
    rows = diamonds if size == "small" else diamonds_many
    name, version = name_of(models.regressor)
    client = triton.InferenceServerClient(host(server))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(name) and client.is_model_ready(name, version)
    metadata = client.get_model_metadata(name)
    assert metadata["versions"] == [version]
    outputs = [triton.InferRequestedOutput("predictions", binary_data=binary)]
    result = client.infer(
        name, triton_inputs(metadata, rows, binary), outputs=outputs, request_id="q-1"
    )
    answer = result.get_response()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == (name, version, "q-1")
    assert answer["outputs"][0]["shape"] == [len(rows)]
    same(result.as_numpy("predictions"), invocations(server, rows))


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_asyncio_gives_invocations_predictions(
    server: str, models: Models, diamonds: pd.DataFrame, binary: bool
) -> None:
    name, version = name_of(models.regressor)

    async def infer() -> list[np.ndarray]:
        client = triton_aio.InferenceServerClient(host(server))
        try:
            metadata = await client.get_model_metadata(name, version)
            parts = [diamonds.iloc[i::4] for i in range(4)]  # concurrent, one model call each
            results = await asyncio.gather(
                *(
                    client.infer(name, triton_inputs(metadata, part, binary), model_version=version)
                    for part in parts
                )
            )
            return [r.as_numpy("predictions") for r in results]
        finally:
            await client.close()

    for i, got in enumerate(asyncio.run(infer())):
        same(got, invocations(server, diamonds.iloc[i::4]))


def test_bad_input_is_a_400_naming_the_input_and_row_and_spares_the_others(
    server: str, models: Models, diamonds: pd.DataFrame
) -> None:
    name, _ = name_of(models.regressor)
    base = fixture("diamonds")["request"]
    bad = json.loads(json.dumps(base))
    carat = next(t for t in bad["inputs"] if t["name"] == "carat")
    carat["data"][7] = "heavy"
    url = f"{server}/v2/models/{name}/infer"

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(client.post(url, json=bad), client.post(url, json=base))

    refused, answered = asyncio.run(both())
    assert refused.status_code == 400
    assert refused.json() == {"error": "column 'carat' expects double, got str \"heavy\" in row 7"}
    assert refused.headers["x-tagserve-model"] == models.regressor
    assert answered.status_code == 200
    same(np.array(answered.json()["outputs"][0]["data"]), invocations(server, diamonds))
    other = httpx.post(f"{server}/v2/models/another/infer", json=base)
    assert other.status_code == 404 and "another" in other.json()["error"]
    stale = httpx.get(f"{server}/v2/models/{name}/versions/nope")
    assert stale.status_code == 404


def test_client_mistakes_get_the_protocols_json_errors_and_a_slow_body_408(
    server: str, models: Models
) -> None:
    """An empty body, a wrong method, a path no route takes: ``{"error": ...}`` as every V2
    error; a body that does not arrive within TAGSERVE_REQUEST_READ_SECONDS: 408."""
    from tests.helpers.slow_clients import request_head, status_of

    name, _ = name_of(models.regressor)
    path = f"/v2/models/{name}/infer"
    empty = httpx.post(f"{server}{path}", content=b"", timeout=60)
    assert empty.status_code == 400
    assert empty.json()["error"].startswith("the body is empty: send an inference request")
    wrong = httpx.get(f"{server}{path}", timeout=60)
    assert wrong.status_code == 405 and "does not take GET" in wrong.json()["error"]
    nowhere = httpx.get(f"{server}/v2/models/{name}/nowhere", timeout=60)
    assert nowhere.status_code == 404 and "no route" in nowhere.json()["error"]

    async def slow_body() -> bytes:
        port = int(server.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request_head(path, 100) + b'{"inputs": ')  # and nothing more
            await writer.drain()
            return await asyncio.wait_for(reader.read(), timeout=60)  # closed after the 408
        finally:
            writer.close()

    answer = asyncio.run(slow_body())
    assert status_of(answer) == 408, answer[:200]
    assert b'{"error":"the request\'s body did not arrive within' in answer


# --- every generated shape, and the penguins classifier --------------------------------------


@pytest.fixture(scope="module", params=SHAPE_KEYS)
@starts_server
def shape_server(
    request: pytest.FixtureRequest,
    shaped: dict[str, str],
    models: Models,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str, str]]:
    """``bentoml serve`` of the shape's model: (key, tag, URL)."""
    key = request.param
    tag = shaped[key]
    log = tmp_path_factory.mktemp(f"v2-{key}") / "bentoml-serve.log"
    env = subprocess_env(models, TAGSERVE_MODEL=tag)
    with bentoml_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as url:
        yield key, tag, url


def test_mlserver_codec_requests_and_tritonclient_equal_invocations(
    shape_server: tuple[str, str, str],
) -> None:
    key, tag, url = shape_server
    name, version = name_of(tag)
    frame = rows_frame(key)
    want = invocations(url, frame)
    answer = httpx.post(
        f"{url}/v2/models/{name}/infer", content=json.dumps(fixture(key)["request"]), timeout=60
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model_name"], body["model_version"]) == (name, version)
    metadata = httpx.get(f"{url}/v2/models/{name}").json()
    assert [o["name"] for o in body["outputs"]] == [o["name"] for o in metadata["outputs"]]
    for output in body["outputs"]:
        assert np.array(output["data"]).size == int(np.prod(output["shape"]))
    same(np.array(body["outputs"][0]["data"]), want)
    client = triton.InferenceServerClient(host(url))
    result = client.infer(name, triton_inputs(metadata, frame, binary=True))
    same(result.as_numpy("predictions"), want)


def test_classifier_probabilities_are_predict_batch_ones(
    shape_server: tuple[str, str, str],
) -> None:
    key, tag, url = shape_server
    name, _ = name_of(tag)
    metadata = httpx.get(f"{url}/v2/models/{name}").json()
    if len(metadata["outputs"]) == 1:
        pytest.skip(f"{key} is a regressor: no probabilities")
    frame = rows_frame(key)
    client = triton.InferenceServerClient(host(url))
    result = client.infer(name, triton_inputs(metadata, frame, binary=True))
    proba = result.as_numpy("probabilities")
    classes = result.get_output("probabilities")["parameters"]["classes"]
    assert classes == metadata["outputs"][1]["parameters"]["classes"]
    records = json.loads(frame.to_json(orient="records"))
    batch = httpx.post(f"{url}/predict_batch", json=records, timeout=60)
    assert batch.status_code == 200, batch.text
    want = [[a["probabilities"][str(c)] for c in classes] for a in batch.json()]
    assert proba.tobytes() == np.array(want).tobytes()


# --- canary: the candidate answers the routed path, the versioned paths name their model ----


@pytest.fixture(scope="module")
@starts_server
def canary_server(
    models: Models, candidate: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("v2-canary") / "bentoml-serve.log"
    env = subprocess_env(
        models,
        TAGSERVE_MODEL=models.regressor,
        TAGSERVE_CANDIDATE=candidate,
        TAGSERVE_CANARY_PERCENT="100",
    )
    with bentoml_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as url:
        yield url


def test_canary_routes_v2_and_versions_name_their_model(
    canary_server: str, models: Models, candidate: str, diamonds: pd.DataFrame
) -> None:
    name, live_version = name_of(models.regressor)
    _, candidate_version = name_of(candidate)
    assert candidate_version != live_version
    request = json.dumps(fixture("diamonds")["request"])
    paths = {
        f"/v2/models/{name}/infer": candidate,  # routed: the canary takes all
        f"/v2/models/{name}/versions/{live_version}/infer": models.regressor,
        f"/v2/models/{name}/versions/{candidate_version}/infer": candidate,
    }
    for path, tag in paths.items():
        answer = httpx.post(f"{canary_server}{path}", content=request, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-tagserve-model"] == tag
        assert answer.json()["model_version"] == name_of(tag)[1]
    refused = httpx.post(
        f"{canary_server}/v2/models/{name}/versions/{candidate_version}/infer", content=b"{}"
    )
    assert refused.status_code == 400 and refused.headers["x-tagserve-model"] == candidate
    versions = httpx.get(f"{canary_server}/v2/models/{name}/versions/{candidate_version}")
    assert versions.json()["versions"] == [candidate_version]


# --- a value the model itself cannot take --------------------------------------------------------


def v2_json(metadata: dict, frame: pd.DataFrame) -> dict[str, Any]:
    """The rows as a V2 JSON request, each input typed as the metadata says."""
    inputs = [
        {
            "name": spec["name"],
            "datatype": spec["datatype"],
            "shape": [len(frame), 1],
            "data": frame[spec["name"]].tolist(),
        }
        for spec in metadata["inputs"]
    ]
    return {"inputs": inputs}


@pytest.mark.parametrize("count", [2, 100], ids=["small", "large"])
def test_a_value_that_fails_in_the_model_is_a_400_and_spares_the_next(
    models: Models, fragile: str, fragile_server: str, count: int
) -> None:
    """A depth within every bound that the fragile model's scaler pushes past float32: a
    400 (never a 500), through the record entry (small) and the frame (large) alike."""
    from tests.helpers.service_models import FRAGILE_DEPTH, records

    name, _ = name_of(fragile)
    rows = records(models.example(fragile))
    frame = pd.DataFrame([rows[i % len(rows)] for i in range(count)])
    metadata = httpx.get(f"{fragile_server}/v2/models/{name}").json()
    url = f"{fragile_server}/v2/models/{name}/infer"
    good = httpx.post(url, json=v2_json(metadata, frame), timeout=60)
    assert good.status_code == 200, good.text
    frame.loc[1, "depth"] = FRAGILE_DEPTH
    bad = httpx.post(url, json=v2_json(metadata, frame), timeout=60)
    assert bad.status_code == 400, bad.text
    assert "the model cannot take this input (ValueError" in bad.json()["error"]
    assert httpx.post(url, json=v2_json(metadata, frame.drop(index=1)), timeout=60).is_success
