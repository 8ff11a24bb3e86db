"""The MLflow scoring protocol as plain functions, without a server."""

from __future__ import annotations

import json

import pytest

from inference.contract import Column, Contract
from inference.errors import InputError
from serving.protocol import UnsupportedMediaType, media_type, parse_invocation

CONTRACT = Contract([Column("carat", "double"), Column("cut", "string")])
ROWS = [{"carat": 0.3, "cut": "Ideal"}, {"carat": 1.5, "cut": "Good"}]
SPLIT = [[0.3, "Ideal"], [1.5, "Good"]]
WRONG_TYPE = b'{"dataframe_records": [{"carat": "x", "cut": "a"}]}'


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", {"dataframe_records": ROWS}),
        (
            "application/json",
            {
                "dataframe_split": {
                    "columns": ["carat", "cut"],
                    "data": [[0.3, "Ideal"], [1.5, "Good"]],
                }
            },
        ),
        ("application/json; charset=utf-8", {"instances": ROWS}),
        ("application/json", {"inputs": {"carat": [0.3, 1.5], "cut": ["Ideal", "Good"]}}),
        ("text/csv", "carat,cut\n0.3,Ideal\n1.5,Good\n"),
        (None, {"inputs": [[0.3, "Ideal"], [1.5, "Good"]]}),
    ],
    ids=["records", "split", "instances", "columns", "csv", "no-content-type"],
)
def test_every_format_gives_the_same_frame(content_type, body) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    frame = parse_invocation(raw, content_type, CONTRACT)
    assert frame.to_dict("records") == ROWS
    assert str(frame["carat"].dtype) == "float64"


@pytest.mark.parametrize(
    ("content_type", "body", "error", "problem"),
    [
        ("text/plain", b"x", UnsupportedMediaType, "unsupported content type 'text/plain'"),
        ("application/json; charset=latin-1", b"{}", UnsupportedMediaType, "UTF-8"),
        ("application/json", b"{nope", InputError, "not valid JSON"),
        ("application/json", b'{"records": []}', InputError, "exactly one of the keys"),
        (
            "application/json",
            WRONG_TYPE,
            InputError,
            "expects double",
        ),
        ("text/csv", b"", InputError, "not valid CSV"),
    ],
    ids=["content-type", "charset", "malformed", "no-key", "wrong-type", "empty-csv"],
)
def test_bad_bodies_are_client_errors(content_type, body, error, problem) -> None:
    with pytest.raises(error, match=problem):
        parse_invocation(body, content_type, CONTRACT)


def test_media_type_parameters() -> None:
    assert media_type("text/csv; charset=utf-8") == ("text/csv", {"charset": "utf-8"})
