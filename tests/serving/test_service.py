"""The service in-process: its schema from the MLflow signature, its answers against the
native model, and its HTTP app (BentoML's own ASGI app, run by Starlette's test client):
typed APIs, bad inputs, the MLflow scoring protocol, metadata, health."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.pipeline import Pipeline

from inference.contract import FEATURE_LIMIT
from inference.errors import InputError
from tests.helpers.domain import IDS, OUTSIDE
from tests.helpers.service_models import (
    FRAGILE_DEPTH,
    PROJECT_ROOT,
    Models,
    bentoml_home,
    load_service,
    records,
)

MAX_ROWS = 50  # TAGSERVE_MAX_ROWS of the regressor's service copy here


@pytest.fixture(scope="module")
def home(models: Models) -> Iterator[Models]:
    with bentoml_home(models.bentoml_home):
        yield models


@pytest.fixture(scope="module")
def regressor(home: Models) -> Any:
    os.environ["TAGSERVE_MAX_ROWS"] = str(MAX_ROWS)
    try:
        return load_service(home.regressor)
    finally:
        del os.environ["TAGSERVE_MAX_ROWS"]


@pytest.fixture(scope="module")
def classifier(home: Models) -> Any:
    return load_service(home.classifier)


@pytest.fixture(scope="module")
def client(regressor: Any) -> Iterator[Any]:
    """The regressor's HTTP app, started (its lifespan loads the model)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette's test client on httpx
        from starlette.testclient import TestClient

        with TestClient(regressor.Tagserve.to_asgi()) as test_client:
            yield test_client


def native(models: Models, tag: str) -> Any:
    """The model as the pipeline loads it: the independent reference."""
    from inference.loading import load_pipeline

    return load_pipeline(models.mlflow_folder(tag))


def example_frame(models: Models, tag: str) -> pd.DataFrame:
    split = models.example(tag)["dataframe_split"]
    return pd.DataFrame(split["data"], columns=split["columns"])


# --- schema --------------------------------------------------------------------------------


def test_record_schema_is_the_signature(home: Models, regressor: Any, classifier: Any) -> None:
    schema = regressor.Record.model_json_schema()
    assert list(schema["properties"]) == [
        "carat",
        "depth",
        "table",
        "x",
        "y",
        "z",
        "cut",
        "color",
        "clarity",
    ]
    assert schema["properties"]["carat"]["type"] == "number"
    assert schema["properties"]["cut"]["type"] == "string"
    assert set(schema["required"]) == set(schema["properties"])
    assert schema["additionalProperties"] is False
    # penguins: numeric columns with missing values are optional, year is a required long
    schema = classifier.Record.model_json_schema()
    assert schema["properties"]["year"]["type"] == "integer"
    assert {"type": "null"} in schema["properties"]["bill_length_mm"]["anyOf"]
    assert "bill_length_mm" not in schema.get("required", [])
    assert "year" in schema["required"] and "island" in schema["required"]


def test_openapi_names_every_feature_with_its_type(client: Any) -> None:
    spec = client.get("/docs.json").json()
    record = spec["components"]["schemas"]["Record"]
    assert {k: v["type"] for k, v in record["properties"].items()} == {
        **dict.fromkeys(["carat", "depth", "table", "x", "y", "z"], "number"),
        **dict.fromkeys(["cut", "color", "clarity"], "string"),
    }
    body = spec["paths"]["/predict_batch"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["items"]["$ref"].endswith("/Record")
    assert body["schema"]["minItems"] == 1 and body["schema"]["maxItems"] == MAX_ROWS
    assert {"/predict", "/predict_batch", "/metadata"} <= set(spec["paths"])


def test_the_bento_holds_the_service_and_the_packages_it_imports() -> None:
    """A bento holds service.py, the core (``inference``) and ``serving``: together they
    import nothing else from the project."""
    shipped = ["service.py", *sorted(str(p) for p in PROJECT_ROOT.glob("inference/*.py"))]
    shipped += sorted(str(p) for p in PROJECT_ROOT.glob("serving/*.py"))
    project = {p.name for p in PROJECT_ROOT.iterdir() if (p / "__init__.py").exists()}
    for path in shipped:
        tree = ast.parse((PROJECT_ROOT / path).read_text())
        imported = {
            (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom) and getattr(node, "level", 0) == 0
            for alias in node.names
        }
        outside = (imported & project) - {"inference", "serving"}
        assert not outside, f"{path} imports project packages {outside}"
    bentofile = yaml.safe_load((PROJECT_ROOT / "bentofile.yaml").read_text())
    assert bentofile["include"] == ["/service.py", "/inference/", "/serving/"]
    assert bentofile["service"] == "service:Tagserve"


# --- answers -------------------------------------------------------------------------------


def test_predict_and_predict_batch_match_the_native_model(home: Models, regressor: Any) -> None:
    service = regressor.Tagserve()
    frame = example_frame(home, home.regressor)
    expected = native(home, home.regressor).predict(frame).tolist()
    rows = [regressor.Record(**r) for r in records(home.example(home.regressor))]
    assert [asyncio.run(service.predict(r)).prediction for r in rows] == expected
    assert [p["prediction"] for p in service.predict_batch(rows)] == expected
    assert [p["prediction"] for p in service.predict_batch(rows[::-1])] == expected[::-1]
    # the forest predicts on one core in the service, as the native sklearn Pipeline
    assert service.state.models.live.pipeline.get_params()["model__n_jobs"] == 1
    assert isinstance(service.state.models.live.pipeline, Pipeline)


def test_classifier_gives_class_probabilities(home: Models, classifier: Any) -> None:
    service = classifier.Tagserve()
    reference = native(home, home.classifier)
    rows = records(home.example(home.classifier))
    rows.append({**rows[0], "sex": None, "bill_length_mm": None})  # optional columns
    answers = service.predict_batch([classifier.Record(**r) for r in rows])
    frame = pd.DataFrame.from_records(rows).replace({None: np.nan})
    assert [a["prediction"] for a in answers] == reference.predict(frame).tolist()
    for answer, proba in zip(answers, reference.predict_proba(frame), strict=True):
        assert list(answer["probabilities"]) == ["Adelie", "Chinstrap", "Gentoo"]
        assert list(answer["probabilities"].values()) == pytest.approx(proba.tolist())
    one = asyncio.run(service.predict(classifier.Record(**rows[-1])))
    assert one.model_dump() == answers[-1]
    assert service.state.describe().classes == ["Adelie", "Chinstrap", "Gentoo"]


def test_every_api_runs_the_fast_path_and_answers_as_sklearn(
    home: Models, classifier: Any, client: Any
) -> None:
    """The import proved the fast path exact, the service re-checked it at start: /predict,
    /predict_batch and /invocations answer with it, bit for bit as the native model."""
    from inference.contract import records_frame

    service = classifier.Tagserve()
    assert service.state.models.live.fast is not None
    meta = service.state.describe()
    assert meta.engine.startswith("numpy+numba-forest")
    assert meta.fast_path["import"]["exact"] and meta.fast_path["startup"]["exact"]
    rows = records(home.example(home.classifier))
    rows += [{**rows[0], "sex": None}, {**rows[1], "body_mass_g": None}]
    frame = records_frame(rows, service.state.contract)  # what the service hands the model
    reference = native(home, home.classifier)
    labels, proba = reference.predict(frame).tolist(), reference.predict_proba(frame).tolist()
    batch = service.predict_batch([classifier.Record(**r) for r in rows])
    singles = [asyncio.run(service.predict(classifier.Record(**r))).model_dump() for r in rows]
    for answers in (batch, singles):
        assert [a["prediction"] for a in answers] == labels
        assert [list(a["probabilities"].values()) for a in answers] == proba  # exact floats
    # An island the model never saw reaches it only with TAGSERVE_UNKNOWN_CATEGORIES=accept:
    # the fast path answers it as sklearn does too.
    unknown = {**rows[1], "island": "Atlantis", "body_mass_g": None}
    (answer,) = service.state.models.live.predict_records([unknown])
    frame = records_frame([unknown], service.state.contract)
    assert answer["prediction"] == reference.predict(frame).tolist()[0]
    assert list(answer["probabilities"].values()) == reference.predict_proba(frame).tolist()[0]

    regressor_meta = client.get("/metadata").json()
    assert regressor_meta["engine"].startswith("numpy+numba-forest")
    assert regressor_meta["fast_path"]["import"]["checked_on"]["input_example"] == 3


def test_a_fast_path_that_fails_the_start_up_check_is_not_served(
    home: Models, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A saved fast path that no longer reproduces sklearn (damaged here) is left unused:
    sklearn serves, and /metadata and the log say why."""
    import shutil
    import stat

    copy = tmp_path_factory.mktemp("damaged-bentoml")
    name, version = home.regressor.split(":")
    shutil.copytree(home.bentoml_home / "models" / name, copy / "models" / name)
    saved = copy / "models" / name / version / "fastpath" / "fastpath.npz"
    saved.chmod(saved.stat().st_mode | stat.S_IWUSR)
    with np.load(saved) as arrays:
        # the preprocessing's statistics (the forest's arrays are index-checked at load)
        damaged = {k: arrays[k] * 2 + 1 if k[0].isdigit() else arrays[k] for k in arrays.files}
    np.savez(saved, **damaged)
    with bentoml_home(copy):
        service = load_service(home.regressor).Tagserve.inner()
    meta = service.state.describe()
    assert meta.engine == "sklearn" and meta.fast_path["import"]["exact"]
    assert "differs from scikit-learn" in meta.fast_path["startup"]["reason"]
    frame = example_frame(home, home.regressor)
    assert (
        service.state.models.live.predict(frame).tolist()
        == native(home, home.regressor).predict(frame).tolist()
    )


# --- HTTP: typed APIs and bad input ----------------------------------------------------------


def test_http_predict_and_batch(home: Models, client: Any) -> None:
    rows = records(home.example(home.regressor))
    expected = native(home, home.regressor).predict(example_frame(home, home.regressor))
    answer = client.post("/predict", json=rows[0])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"prediction": expected[0]}
    answer = client.post("/predict_batch", json=rows)
    assert answer.status_code == 200, answer.text
    assert answer.json() == [{"prediction": p} for p in expected]


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (lambda r: r.pop("carat"), "carat", "Field required"),
        (lambda r: r.update(carat="0.3"), "carat", "valid number"),
        (lambda r: r.update(cut=3), "cut", "valid string"),
        (lambda r: r.update(carat=None), "carat", "must not be null"),
        (lambda r: r.update(colour="E"), "colour", "Extra inputs are not permitted"),
        (lambda r: r.update(depth=True), "depth", "valid number"),
    ],
    ids=["missing", "string-for-number", "number-for-string", "null", "unknown", "bool"],
)
def test_bad_record_is_a_400_naming_the_field(
    home: Models, client: Any, change: Any, field: str, problem: str
) -> None:
    row = records(home.example(home.regressor))[0]
    change(row)
    for path, body, where in (("/predict", row, field), ("/predict_batch", [row], f"[0].{field}")):
        answer = client.post(path, json=body)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert f"{where}: " in error and problem in error, error


@pytest.mark.parametrize(
    ("change", "where", "problem"),
    [
        (lambda r: r.update(carat="0.3"), "[7].carat", "valid number"),
        (lambda r: r.update(cut=None), "[7].cut", "must not be null"),
        (lambda r: r.update(depth=1e300), "[7].depth", "outside the range"),
        (lambda r: r.update(x=True), "[7].x", "valid number"),
        (lambda r: r.pop("table"), "[7].table", "Field required"),
    ],
    ids=["string-for-number", "null", "out-of-range", "bool", "missing"],
)
def test_a_bad_record_in_a_batch_is_named_by_row_and_field(
    home: Models, client: Any, change: Any, where: str, problem: str
) -> None:
    """A body of ten good records but one: the 400 names its row and field; the same body
    with the record mended is answered."""
    good = records(home.example(home.regressor))
    rows = [dict(good[i % len(good)]) for i in range(10)]
    change(rows[7])
    answer = client.post("/predict_batch", json=rows)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert f"{where}: " in error and problem in error, error
    rows[7] = dict(good[7 % len(good)])
    answer = client.post("/predict_batch", json=rows)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()) == 10


@pytest.mark.parametrize(
    ("path", "body", "problem"),
    [
        ("/predict", b'{"carat": 0.3,', "Invalid JSON"),
        ("/predict_batch", b"[{]", "Invalid JSON"),
        ("/predict_batch", b"[]", "at least 1 item"),
        ("/predict_batch", b'{"carat": 0.3}', "valid list"),
        ("/predict", b"", "the body is empty: send one record"),
    ],
    ids=["malformed", "malformed-list", "empty-list", "not-a-list", "empty-body"],
)
def test_malformed_body_is_a_400(client: Any, path: str, body: bytes, problem: str) -> None:
    answer = client.post(path, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert problem in answer.json()["error"]


def test_more_rows_than_the_limit_is_a_400(home: Models, client: Any) -> None:
    row = records(home.example(home.regressor))[0]
    answer = client.post("/predict_batch", json=[row] * (MAX_ROWS + 1))
    assert answer.status_code == 400
    assert f"at most {MAX_ROWS} items" in answer.json()["error"]
    answer = client.post("/invocations", json={"dataframe_records": [row] * (MAX_ROWS + 1)})
    assert answer.status_code == 400
    assert "TAGSERVE_MAX_ROWS" in answer.json()["message"]
    assert client.post("/predict_batch", json=[row] * MAX_ROWS).status_code == 200


FLOAT32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (1e300, "outside the range the model takes for a double column"),
        (-1.7976931348623157e308, "outside the range"),
        (FLOAT32_MAX * 1.01, "outside the range"),
        (FEATURE_LIMIT * 1.01, "outside the range"),
    ],
    ids=["1e300", "-double-max", "float32-max+1%", "limit+1%"],
)
def test_a_value_the_model_cannot_take_is_a_400_naming_field_and_row(
    home: Models, client: Any, value: float, problem: str
) -> None:
    """Finite JSON numbers the forest cannot take (it casts to float32): refused per record,
    before any model call, on every route."""
    rows = records(home.example(home.regressor))
    bad = {**rows[0], "carat": value}
    answer = client.post("/predict", json=bad)
    assert answer.status_code == 400, answer.text
    assert "carat: " in answer.json()["error"] and problem in answer.json()["error"]
    answer = client.post("/predict_batch", json=[rows[0], rows[1], bad])
    assert answer.status_code == 400, answer.text
    assert "[2].carat: " in answer.json()["error"] and problem in answer.json()["error"]
    answer = client.post("/invocations", json={"dataframe_records": [rows[0], bad]})
    assert answer.status_code == 400, answer.text
    assert "column 'carat' in row 1" in answer.json()["message"]


def test_a_long_beyond_int64_is_refused_by_record_and_frame(home: Models, classifier: Any) -> None:
    """Penguins' year is a long: the record type (predict, predict_batch) and the frame check
    (invocations) refuse an integer beyond int64, naming the field."""
    from pydantic import ValidationError

    from serving.protocol import parse_invocation

    row = records(home.example(home.classifier))[0]
    with pytest.raises(ValidationError, match=r"year\n  9223372036854775808 is outside the range"):
        classifier.Record(**{**row, "year": 2**63})
    contract = classifier.Tagserve().state.contract
    body = json.dumps({"instances": [row, {**row, "year": 2**64}]}).encode()
    with pytest.raises(InputError, match="column 'year' in row 1: .* outside the range"):
        parse_invocation(body, "application/json", contract)


@pytest.mark.parametrize(
    ("content_type", "carat"),
    [
        ("application/json", "1e309"),
        ("application/json", "Infinity"),
        ("application/json", "-Infinity"),
        ("text/csv", "inf"),
        ("text/csv", "1e309"),
    ],
    ids=["1e309", "Infinity", "-Infinity", "csv-inf", "csv-1e309"],
)
def test_invocations_non_finite_numbers_are_a_400(
    home: Models, client: Any, content_type: str, carat: str
) -> None:
    """Python's JSON reads 1e309 and Infinity as inf, pandas' CSV reader inf."""
    row = {k: v for k, v in records(home.example(home.regressor))[0].items() if k != "carat"}
    if content_type == "text/csv":
        body = "carat," + ",".join(row) + "\n" + carat + "," + ",".join(map(str, row.values()))
    else:
        body = '{"dataframe_records": [{"carat": ' + carat + ", " + json.dumps(row)[1:] + "]}"
    answer = client.post("/invocations", content=body, headers={"content-type": content_type})
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"].startswith("column 'carat'"), answer.text


NESTED = b"[" * 20_000 + b"]" * 20_000


@pytest.mark.parametrize(
    ("path", "body", "problem"),
    [
        ("/predict_batch", NESTED, "invalid input: body: Invalid JSON: nested too deeply"),
        (
            "/predict_batch",
            b'[{"carat": ' + NESTED + b"}]",
            "invalid input: body: Invalid JSON: nested too deeply",
        ),
        ("/predict", NESTED, "Invalid JSON: recursion limit exceeded"),  # pydantic's words
        ("/invocations", NESTED, "the body is not valid JSON: nested too deeply"),
        (
            "/invocations",
            b'{"inputs": ' + NESTED + b"}",
            "the body is not valid JSON: nested too deeply",
        ),
    ],
    ids=["predict_batch", "predict_batch-value", "predict", "invocations", "invocations-inputs"],
)
def test_deeply_nested_json_is_a_400(client: Any, path: str, body: bytes, problem: str) -> None:
    answer = client.post(path, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text[:300]
    assert problem in answer.text, answer.text[:300]


@pytest.mark.parametrize("path", ["/predict", "/predict_batch", "/metadata"])
@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "multipart/form-data; charset=utf-8"]
)
def test_multipart_without_boundary_is_a_4xx(client: Any, path: str, content_type: str) -> None:
    answer = client.post(path, content=b"--x\r\n", headers={"content-type": content_type})
    assert 400 <= answer.status_code < 500, answer.text
    assert "boundary" in answer.json()["error"]


FORM = b'--x\r\nContent-Disposition: form-data; name="carat"\r\n\r\n0.3\r\n--x--\r\n'


@pytest.mark.parametrize("path", ["/predict", "/predict_batch", "/metadata", "/invocations"])
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=x", b"garbage"),
        ("multipart/form-data; boundary=x", FORM),
        ("application/x-www-form-urlencoded", b"carat=1e300&cut=%ZZ"),
        ("application/vnd.bentoml+pickle", b"\x80\x04garbage"),
        ("text/plain", b"{]"),
        ("application/json; charset=latin-1", b"\xff\xfe"),
        ("application/json", b"\xff\xfe"),
    ],
    ids=["multipart-garbage", "multipart-form", "urlencoded", "pickle", "text", "latin-1", "bytes"],
)
def test_odd_content_types_are_never_a_5xx(
    client: Any, path: str, content_type: str, body: bytes
) -> None:
    answer = client.post(path, content=body, headers={"content-type": content_type})
    assert answer.status_code < 500, answer.text


@pytest.mark.parametrize(
    "content_type",
    ["Application/JSON", 'application/json; charset="utf-8"', 'APPLICATION/JSON; Charset="UTF-8"'],
)
def test_content_types_compare_case_insensitively_and_unquoted(
    home: Models, client: Any, content_type: str
) -> None:
    rows = records(home.example(home.regressor))
    headers = {"content-type": content_type}
    for path, body in (
        ("/predict", rows[0]),
        ("/predict_batch", rows),
        ("/invocations", {"dataframe_records": rows}),
    ):
        answer = client.post(path, content=json.dumps(body).encode(), headers=headers)
        assert answer.status_code == 200, f"{path}: {answer.text}"
        plain = client.post(path, json=body)  # application/json, as written
        assert answer.content == plain.content, path


def big_body(row: dict[str, Any], size: int) -> bytes:
    """A JSON list of copies of ``row`` of at least ``size`` bytes."""
    one = json.dumps(row).encode()
    return b"[" + b",".join([one] * (size // len(one) + 1)) + b"]"


@pytest.mark.parametrize("path", ["/predict_batch", "/predict", "/invocations", "/metadata"])
def test_a_body_over_the_cap_is_a_413_before_it_is_read(
    home: Models, client: Any, path: str
) -> None:
    """The cap (default: from TAGSERVE_MAX_ROWS) answers 413 from the Content-Length, and
    while a body of unknown length streams in."""
    cap = client.get("/metadata").json()["limits"]["max_body_bytes"]
    assert 0 < cap < 1_000_000  # bounded by the row limit (50 here)
    body = big_body(records(home.example(home.regressor))[0], cap + 1)
    answer = client.post(path, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 413, answer.text[:300]
    assert "TAGSERVE_MAX_BODY_BYTES" in answer.text

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    answer = client.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413, answer.text[:300]
    assert "TAGSERVE_MAX_BODY_BYTES" in answer.text


def test_max_body_bytes_is_configurable(home: Models, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.settings import Settings

    monkeypatch.setenv("TAGSERVE_MAX_BODY_BYTES", "123456")
    assert Settings.from_env().max_body_bytes == 123456
    monkeypatch.setenv("TAGSERVE_MAX_BODY_BYTES", "big")
    with pytest.raises(ValueError, match="TAGSERVE_MAX_BODY_BYTES must be a whole number"):
        Settings.from_env()


# --- HTTP: the MLflow scoring protocol -----------------------------------------------------


def mlflow_payloads(example: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    split = example["dataframe_split"]
    rows = records(example)
    columns = {c: [r[c] for r in rows] for c in split["columns"]}
    csv = pd.DataFrame(split["data"], columns=split["columns"]).to_csv(index=False)
    as_json = {
        "dataframe_split (the model's serving_input_example.json)": example,
        "dataframe_split with index": {"dataframe_split": {**split, "index": [7, 8, 9]}},
        "dataframe_records": {"dataframe_records": rows},
        "instances (records)": {"instances": rows},
        "inputs (columns)": {"inputs": columns},
        "inputs (rows in signature order)": {"inputs": split["data"]},
    }
    payloads = {k: ("application/json", json.dumps(v).encode()) for k, v in as_json.items()}
    payloads["csv"] = ("text/csv", csv.encode())
    payloads["json with charset"] = (
        "application/json; charset=utf-8",
        json.dumps(example).encode(),
    )
    return payloads


def test_invocations_speaks_the_mlflow_protocol(home: Models, client: Any) -> None:
    example = home.example(home.regressor)
    expected = native(home, home.regressor).predict(example_frame(home, home.regressor)).tolist()
    for name, (content_type, body) in mlflow_payloads(example).items():
        answer = client.post("/invocations", content=body, headers={"content-type": content_type})
        assert answer.status_code == 200, f"{name}: {answer.text}"
        assert answer.json() == {"predictions": expected}, name


def _without(row: dict[str, Any], column: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != column}


@pytest.mark.parametrize(
    ("content_type", "make_body", "status", "problem"),
    [
        (
            "application/json",
            lambda r: {"dataframe_records": [_without(r, "carat")]},
            400,
            "'carat'",
        ),
        (
            "application/json",
            lambda r: {"dataframe_records": [{**r, "carat": "x"}]},
            400,
            "column 'carat' expects double",
        ),
        (
            "application/json",
            lambda r: {"dataframe_records": [{**r, "carat": None}]},
            400,
            "'carat' is required",
        ),
        (
            "application/json",
            lambda r: {"dataframe_split": {"columns": list(r), "data": [list(r.values())[:-1]]}},
            400,
            "row 0 has 8 values",
        ),
        ("application/json", lambda r: {"dataframe_records": []}, 400, "no rows"),
        ("application/json", lambda r: {"records": [r]}, 400, "exactly one of the keys"),
        ("application/json", lambda r: [r], 400, "JSON object"),
        ("application/json", lambda r: b"{nope", 400, "not valid JSON"),
        (
            "text/csv",
            lambda r: pd.DataFrame([{**r, "carat": "abc"}]).to_csv(index=False).encode(),
            400,
            "column 'carat' expects double, got str \"abc\" in row 1",
        ),
        ("text/csv", lambda r: b"", 400, "the CSV body is empty"),
        ("text/plain", lambda r: b"x", 415, "unsupported content type"),
        ("application/json; charset=latin-1", lambda r: {"inputs": r}, 415, "UTF-8"),
    ],
    ids=[
        "missing-column",
        "wrong-type",
        "null",
        "short-row",
        "no-rows",
        "no-format-key",
        "not-an-object",
        "malformed",
        "csv-wrong-type",
        "csv-empty",
        "content-type",
        "charset",
    ],
)
def test_invocations_bad_input_is_a_4xx_in_mlflow_form(
    home: Models, client: Any, content_type: str, make_body: Any, status: int, problem: str
) -> None:
    body = make_body(records(home.example(home.regressor))[0])
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = client.post("/invocations", content=raw, headers={"content-type": content_type})
    assert answer.status_code == status, answer.text
    assert answer.json()["error_code"] == "BAD_REQUEST"
    assert problem in answer.json()["message"]


def test_invocations_ignores_extra_columns_as_mlflow_does(home: Models, client: Any) -> None:
    rows = [{**r, "price": 1.0} for r in records(home.example(home.regressor))]
    answer = client.post("/invocations", json={"dataframe_records": rows})
    assert answer.status_code == 200
    assert len(answer.json()["predictions"]) == len(rows)


# --- metadata and health ---------------------------------------------------------------------


def test_metadata_names_model_artifact_code_and_metrics(home: Models, client: Any) -> None:
    via_get = client.get("/metadata")
    via_post = client.post("/metadata")
    assert via_get.status_code == via_post.status_code == 200
    meta = via_get.json()
    assert meta == via_post.json()
    assert meta["model"] == home.regressor
    assert meta["artifact"] == "model_export:v0" and meta["version"] == "v0"
    assert meta["source_ref"] == "local:tagserve-diamonds/model_export:prod"
    assert home.regressor.endswith(meta["digest"][:12])
    assert [c["name"] for c in meta["signature"]["inputs"]][:2] == ["carat", "depth"]
    assert set(meta["metrics"]) == {"val", "test"} and "r2" in meta["metrics"]["val"]
    assert meta["task"] == "regression" and meta["target"] == "price"
    head = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert meta["git_commit"] == head  # served from the checkout: its HEAD
    assert meta["bento"] is None
    assert meta["limits"]["max_rows"] == MAX_ROWS


def test_health_endpoints(client: Any) -> None:
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200


def test_unknown_model_fails_at_import_with_a_readable_error(home: Models) -> None:
    import bentoml

    with pytest.raises(bentoml.exceptions.NotFound, match="python -m importers"):
        load_service("tagserve-nosuchmodel:latest")


def test_max_rows_must_be_a_number(home: Models, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGSERVE_MAX_ROWS", "lots")
    with pytest.raises(ValueError, match="TAGSERVE_MAX_ROWS must be a whole number"):
        load_service(home.regressor)


def test_the_fragile_model_fails_on_a_value_validation_takes(home: Models, fragile: str) -> None:
    """The premise of tests/serving/test_batch_isolation.py: a value within every bound,
    which the fragile model fails on."""
    from inference.contract import value_problem

    row = records(home.example(fragile))[0]
    assert value_problem("double", FRAGILE_DEPTH) is None
    with pytest.raises(ValueError, match="infinity"):
        native(home, fragile).predict(pd.DataFrame([{**row, "depth": FRAGILE_DEPTH}]))


def test_a_classifier_document_has_its_classes_and_nullable_columns(models: Models) -> None:
    """Built in process for the classifier (optional columns, class labels): a column MLflow
    says may be missing may be null in every JSON form and empty in CSV; predictions are
    labels; answers carry the class probabilities."""
    with bentoml_home(models.bentoml_home):
        service = load_service(models.classifier).Tagserve
    document = json.loads(service.inner.plan.openapi_body)
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


# --- the model's domain (more in test_domain.py) --------------------------------------------


@pytest.mark.parametrize(("column", "value", "problem"), OUTSIDE, ids=IDS)
def test_outside_the_domain_is_a_400_naming_column_value_and_domain_on_every_route(
    home: Models, client: Any, column: str, value: Any, problem: str
) -> None:
    rows = records(home.example(home.regressor))
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


def test_within_the_domain_and_null_where_optional_are_served(home: Models, client: Any) -> None:
    """The bounds themselves are inside (inclusive), every trained category is taken."""
    rows = records(home.example(home.regressor))
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
