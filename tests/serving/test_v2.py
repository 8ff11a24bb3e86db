"""The Open Inference Protocol (KServe V2 REST) as plain functions, without a server: requests
built by Triton's own client (``tritonclient.http``, JSON and binary) and by hand give the
frame and the errors ``/invocations`` gives; answers read back by Triton's client."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton

from inference.contract import Column, Contract, records_frame
from inference.errors import InputError
from serving.protocol import parse_invocation
from serving.v2 import (
    HEADER_LENGTH,
    PREDICTIONS,
    PROBABILITIES,
    ServedModel,
    encode_answer,
    model_metadata,
    parse_infer,
)

CONTRACT = Contract(
    [
        Column("carat", "double"),
        Column("cut", "string"),
        Column("depth", "long", required=False),
        Column("weight", "float"),
        Column("count", "integer"),
        Column("flag", "boolean", required=False),
    ]
)
RNG = np.random.default_rng(7)
N = 25
COLUMNS: dict[str, Any] = {
    "carat": RNG.uniform(0.2, 3.0, N).round(4),
    "cut": np.array(RNG.choice(["Ideal", "Good", "Prämie ✓", ""], N), dtype=object),
    "depth": RNG.integers(-(2**40), 2**40, N),
    "weight": RNG.normal(0, 1e3, N),
    "count": RNG.integers(-1000, 1000, N).astype(np.int32),
    "flag": RNG.random(N) < 0.5,
}
DATATYPES = {
    "carat": "FP64",
    "cut": "BYTES",
    "depth": "INT64",
    "weight": "FP64",
    "count": "INT32",
    "flag": "BOOL",
}


def invocation_frame(columns: dict[str, Any]) -> pd.DataFrame:
    """What /invocations makes of the same columns (JSON: ``inputs`` as columns)."""
    body = {name: np.asarray(values).tolist() for name, values in columns.items()}
    return parse_invocation(json.dumps({"inputs": body}).encode(), None, CONTRACT)


def triton_body(binary: bool, order: list[str] | None = None, **extra: Any) -> tuple[bytes, dict]:
    """A request as tritonclient.http builds it, and its headers."""
    tensors = []
    for name in order or list(COLUMNS):
        values = np.asarray(COLUMNS[name]).reshape(-1, 1)
        tensor = triton.InferInput(name, list(values.shape), DATATYPES[name])
        tensor.set_data_from_numpy(values, binary_data=binary)
        tensors.append(tensor)
    body, json_size = triton.InferenceServerClient.generate_request_body(tensors, **extra)
    headers = {} if json_size is None else {HEADER_LENGTH: str(json_size)}
    return body, headers


def tensor(name: str, data: Any, shape: list[int] | None = None, **fields: Any) -> dict:
    datatype = fields.pop("datatype", DATATYPES.get(name, "FP64"))
    return {
        "name": name,
        "datatype": datatype,
        "shape": shape or [len(data)],
        "data": data,
        **fields,
    }


def json_request(tensors: list[dict], **fields: Any) -> bytes:
    return json.dumps({"inputs": tensors, **fields}).encode()


def plain_tensors(shape_of=lambda n: [n]) -> list[dict]:
    return [tensor(n, np.asarray(v).tolist(), shape_of(len(v))) for n, v in COLUMNS.items()]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_requests_give_the_invocations_frame(binary: bool) -> None:
    order = list(reversed(COLUMNS))  # by name, in any order
    body, headers = triton_body(binary, order, request_id="r-1")
    parsed = parse_infer(body, headers, CONTRACT)
    pd.testing.assert_frame_equal(parsed.frame(), invocation_frame(COLUMNS))
    # a small request's records (the record entry) hold the same values
    pd.testing.assert_frame_equal(records_frame(parsed.records(), CONTRACT), parsed.frame())
    assert parsed.request_id == "r-1"
    assert parsed.outputs == [(PREDICTIONS, True)]  # tritonclient asks binary by default


@pytest.mark.parametrize(
    "tensors",
    [
        plain_tensors(),
        plain_tensors(lambda n: [n, 1]),
        [
            {**t, "data": [[v] for v in t["data"]], "shape": [len(t["data"]), 1]}
            for t in plain_tensors()
        ],
    ],
    ids=["flat-[n]", "flat-[n,1]", "nested"],
)
def test_shapes_and_nesting_give_the_same_frame(tensors: list[dict]) -> None:
    body = json_request(tensors, parameters={"content_type": "pd"}, id="x")
    pd.testing.assert_frame_equal(
        parse_infer(body, {}, CONTRACT).frame(), invocation_frame(COLUMNS)
    )


def test_other_widths_nulls_and_parameters_are_taken() -> None:
    """INT32 where the column is long, FP32 where it is double, whole FP64 in an integer
    column; null where a column is optional; parameters accepted."""
    tensors = plain_tensors()
    tensors[0] = {**tensors[0], "datatype": "FP32", "parameters": {"content_type": "np"}}
    tensors[2] = {**tensors[2], "data": [None, *tensors[2]["data"][1:]], "datatype": "INT32"}
    tensors[4] = {**tensors[4], "data": [float(v) for v in tensors[4]["data"]], "datatype": "FP64"}
    tensors[5] = {**tensors[5], "data": [None] * N}
    parsed = parse_infer(json_request(tensors), {}, CONTRACT)
    frame = parsed.frame()
    pd.testing.assert_frame_equal(records_frame(parsed.records(), CONTRACT), frame)
    expected = dict(COLUMNS, depth=[None, *COLUMNS["depth"][1:].tolist()], flag=[None] * N)
    pd.testing.assert_frame_equal(frame, invocation_frame(expected))
    assert np.isnan(frame["depth"][0]) and frame["flag"].isna().all()


def binary_request(arrays: dict[str, np.ndarray]) -> tuple[bytes, dict]:
    tensors = []
    for name, values in arrays.items():
        datatype = triton.np_to_triton_dtype(values.dtype)
        item = triton.InferInput(name, [len(values)], datatype)
        item.set_data_from_numpy(values, binary_data=True)
        tensors.append(item)
    body, size = triton.InferenceServerClient.generate_request_body(tensors)
    return body, {HEADER_LENGTH: str(size)}


def test_binary_widths_are_checked_as_json_values_are() -> None:
    arrays = {name: np.asarray(values) for name, values in COLUMNS.items() if name not in ("cut",)}
    arrays["cut"] = np.array([s.encode() for s in COLUMNS["cut"]], dtype=np.object_)
    arrays["count"] = arrays["count"].astype(np.int64)  # INT64 into an integer column
    arrays["weight"] = arrays["weight"].astype(np.float32)  # FP32 into a float column
    frame = parse_infer(*binary_request(arrays), CONTRACT).frame()
    expected = dict(COLUMNS, weight=arrays["weight"].astype(np.float64).tolist())
    pd.testing.assert_frame_equal(frame, invocation_frame(expected))
    arrays["count"] = np.array([2**40] * N, dtype=np.int64)
    with pytest.raises(InputError, match="column 'count' in row 0: 1099511627776 is outside"):
        parse_infer(*binary_request(arrays), CONTRACT)


@pytest.mark.parametrize(
    ("change", "invocations_value"),
    [
        ({"carat": "1.5"}, "1.5"),
        ({"count": 2.5}, 2.5),
        ({"carat": None}, None),
        ({"cut": 3}, 3),
    ],
    ids=["text-in-number", "fraction-in-integer", "null-in-required", "number-in-text"],
)
def test_bad_values_get_the_invocations_error(change: dict, invocations_value: Any) -> None:
    """The same value, the same error: naming the column (the input) and the row."""
    (name, value), row = next(iter(change.items())), 3
    tensors = plain_tensors()
    for t in tensors:
        if t["name"] == name:
            t["data"][row] = value
    with pytest.raises(InputError) as v2_error:
        parse_infer(json_request(tensors), {}, CONTRACT)
    columns = {n: np.asarray(v).tolist() for n, v in COLUMNS.items()}
    columns[name][row] = invocations_value
    with pytest.raises(InputError) as mlflow_error:
        parse_invocation(json.dumps({"inputs": columns}).encode(), None, CONTRACT)
    assert str(v2_error.value) == str(mlflow_error.value)
    assert repr(name) in str(v2_error.value) and "3" in str(v2_error.value)


def broken(index: int, **fields: Any) -> list[dict]:
    tensors = plain_tensors()
    tensors[index] = {**tensors[index], **fields}
    return tensors


@pytest.mark.parametrize(
    ("body", "headers", "problem"),
    [
        (b"[1]", {}, '"inputs": a list'),
        (b"{nope", {}, "not valid JSON"),
        (json_request(plain_tensors(), id=5), {}, '"id" must be a string'),
        (json_request([*plain_tensors(), tensor("other", [1])]), {}, "'other' is not an input"),
        (json_request([*plain_tensors(), plain_tensors()[0]]), {}, "appears more than once"),
        (json_request(plain_tensors()[1:]), {}, "missing input(s): 'carat'"),
        (json_request(broken(1, shape=[N, 2])), {}, "shape must be [n] or [n, 1]"),
        (json_request(broken(1, shape=[N + 1])), {}, "'cut' has 26 rows"),
        (json_request(broken(0, shape=[N + 1])), {}, "holds 26 values, its data 25"),
        (json_request(broken(0, datatype="FP8")), {}, "datatype 'FP8' is not one of"),
        (json_request(broken(0, data=3)), {}, "data must be a list"),
        (json_request(broken(0, data=[[1.0, 2.0]] * N)), {}, "in row 0: nested data"),
        (json_request(broken(0, parameters={"binary_data_size": 8})), {}, "both data and"),
        (json_request(plain_tensors(), outputs=[{"name": "x"}]), {}, "must name an output"),
        (json_request(plain_tensors()), {HEADER_LENGTH: "9999"}, "Inference-Header-Content"),
        (json_request(plain_tensors()) + b"zz", {HEADER_LENGTH: "-1"}, "Inference-Header-"),
    ],
)
def test_requests_that_are_not_the_protocol_are_refused(body, headers, problem) -> None:
    with pytest.raises(InputError) as refused:
        parse_infer(body, {k.lower(): v for k, v in headers.items()}, CONTRACT)
    assert problem in str(refused.value)


def test_binary_sizes_that_do_not_add_up_are_refused() -> None:
    body, headers = triton_body(True)
    with pytest.raises(InputError, match="bytes of binary data no input"):
        parse_infer(body + b"\0", headers, CONTRACT)
    with pytest.raises(InputError, match="binary_data_size .* is beyond"):
        parse_infer(body[:-1], headers, CONTRACT)
    cut = {"inputs": [{"name": "cut", "datatype": "BYTES", "shape": [1]}]}
    cut["inputs"][0]["parameters"] = {"binary_data_size": 6}
    head = json.dumps(cut).encode()
    with pytest.raises(InputError, match="'cut' in row 0: 9 bytes past the data"):
        parse_infer(head + b"\x09\0\0\0ab", {HEADER_LENGTH: str(len(head))}, CONTRACT)


def test_too_many_rows_are_refused_before_the_data_is_read() -> None:
    with pytest.raises(InputError, match="more than this service accepts"):
        parse_infer(json_request(plain_tensors()), {}, CONTRACT, max_rows=N - 1)


MODEL = ServedModel.of("tagserve-penguins:abc123", "live")
CLASSES = ["Adelie", "Chinstrap", "Gentoo"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_answers_read_back_by_tritonclient(binary: bool) -> None:
    labels = np.array(["Gentoo", "Adelie", "Prämie"], dtype=object)
    proba = RNG.dirichlet([1, 1, 1], 3)
    outputs = [(PREDICTIONS, binary), (PROBABILITIES, binary)]
    values = {PREDICTIONS: labels, PROBABILITIES: proba}
    body, headers = encode_answer(MODEL, "r-9", outputs, values, CLASSES)
    length = headers.get(HEADER_LENGTH)
    result = triton.InferenceServerClient.parse_response_body(
        body, header_length=int(length) if length else None
    )
    answer = result.get_response()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == (
        "tagserve-penguins",
        "abc123",
        "r-9",
    )
    got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy(PREDICTIONS)]
    assert got == labels.tolist()  # binary BYTES come back as bytes: UTF-8
    np.testing.assert_array_equal(result.as_numpy(PROBABILITIES), proba)
    assert result.get_output(PROBABILITIES)["parameters"]["classes"] == CLASSES
    assert ("octet-stream" in headers["content-type"]) == binary


def test_regression_answers_keep_every_bit_in_json() -> None:
    predicted = RNG.normal(3000, 2000, 50)
    body, headers = encode_answer(
        ServedModel.of("d:1", "live"), None, [(PREDICTIONS, False)], {PREDICTIONS: predicted}, None
    )
    answer = json.loads(body)
    assert "id" not in answer and headers == {"content-type": "application/json"}
    (output,) = answer["outputs"]
    assert output["shape"] == [50] and output["datatype"] == "FP64"
    assert np.array(output["data"]).tobytes() == predicted.tobytes()


def test_metadata_types_every_input_as_mlserver_mlflow_and_names_the_outputs() -> None:
    regression = model_metadata(CONTRACT, "d", "1", None)
    assert [(t["name"], t["datatype"], t["shape"]) for t in regression["inputs"]] == [
        (name, DATATYPES[name] if name != "weight" else "FP32", [-1, 1]) for name in COLUMNS
    ]
    assert regression["outputs"] == [{"name": PREDICTIONS, "datatype": "FP64", "shape": [-1]}]
    classifier = Contract(CONTRACT.columns, task="classification")
    outputs = model_metadata(classifier, "p", "2", CLASSES)["outputs"]
    assert outputs[0] == {"name": PREDICTIONS, "datatype": "BYTES", "shape": [-1]}
    assert outputs[1]["shape"] == [-1, 3] and outputs[1]["parameters"]["classes"] == CLASSES
    assert model_metadata(classifier, "p", "2", [0, 1])["outputs"][0]["datatype"] == "INT64"


def test_load_shedding_and_the_canary_take_the_infer_paths() -> None:
    """Every infer path (the live model's and the candidate's, with and without a version)
    is shed, on one budget of the bulk size; the live model's path without a version is routed
    by the canary (its answer tagged), a versioned one is not."""
    import asyncio

    from serving.middleware import LoadShedding, ModelRouting, stack
    from serving.routing import CANDIDATE, LIVE, route_var
    from serving.settings import Settings

    settings = Settings(model="m:1", workers=1, bulk_queue=4)
    options = dict(stack(settings, {}, {"live": "m:1", "candidate": "m:2"}))[LoadShedding]
    infer_paths = ["/v2/models/m/infer", *(f"/v2/models/m/versions/{v}/infer" for v in (1, 2))]
    assert options["budgets"]["/v2/models/m/infer"] == (5, "TAGSERVE_BULK_QUEUE")
    shedding = LoadShedding(None, **options)
    budgets = {id(shedding.admitted[path]) for path in infer_paths}
    assert len(budgets) == 1 and id(shedding.admitted["/invocations"]) not in budgets

    seen: dict[str, str] = {}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        seen[scope["path"]] = route_var.get()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    routing = ModelRouting(app, live="m:1", candidate="m:2", percent=100, fraction=0)

    async def call(path: str) -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "headers": []}
        await routing(scope, None, send)
        return sent

    routed = asyncio.run(call("/v2/models/m/infer"))
    assert seen["/v2/models/m/infer"] == CANDIDATE
    assert (b"x-tagserve-model", b"m:2") in routed[0]["headers"]
    pinned = asyncio.run(call("/v2/models/m/versions/1/infer"))
    assert seen["/v2/models/m/versions/1/infer"] == LIVE and pinned[0]["headers"] == []


def test_an_empty_body_says_so() -> None:
    with pytest.raises(InputError, match="the body is empty"):
        parse_infer(b" ", {}, CONTRACT)
