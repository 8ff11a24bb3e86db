"""The MLflow scoring protocol as plain functions, without a server."""

from __future__ import annotations

import json

import pandas as pd
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
        ("text/csv", b'carat,cut\n0.3,"unclosed\n', InputError, "not valid CSV"),
    ],
    ids=["content-type", "charset", "malformed", "no-key", "wrong-type", "unclosed-quote-csv"],
)
def test_bad_bodies_are_client_errors(content_type, body, error, problem) -> None:
    with pytest.raises(error, match=problem):
        parse_invocation(body, content_type, CONTRACT)


def test_media_type_parameters() -> None:
    assert media_type("text/csv; charset=utf-8") == ("text/csv", {"charset": "utf-8"})
    assert media_type('Text/CSV; Charset="UTF-8"') == ("text/csv", {"charset": "UTF-8"})


@pytest.mark.parametrize(
    "content_type",
    [
        "Application/JSON",
        'application/json; charset="utf-8"',
        "application/json;charset=UTF-8",
        'APPLICATION/JSON; Charset="UTF-8"',
    ],
)
def test_content_types_compare_as_http_says(content_type) -> None:
    """Media types and parameter names are case-insensitive, values may be quoted."""
    body = json.dumps({"dataframe_records": ROWS}).encode()
    assert parse_invocation(body, content_type, CONTRACT).to_dict("records") == ROWS
    body = b"carat,cut\n0.3,Ideal\n1.5,Good\n"
    csv = parse_invocation(body, 'Text/CSV; charset="utf-8"', CONTRACT)
    assert csv.to_dict("records") == ROWS


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"dataframe_records": [{"carat": 1e309, "cut": "a"}]}'),
        ("application/json", b'{"dataframe_records": [{"carat": Infinity, "cut": "a"}]}'),
        ("application/json", b'{"dataframe_records": [{"carat": -1e300, "cut": "a"}]}'),
        ("application/json", b'{"inputs": {"carat": [NaN], "cut": ["a"]}}'),
        ("text/csv", b"carat,cut\n0.3,a\ninf,b\n"),
        ("text/csv", b"carat,cut\n0.3,a\n1e309,b\n"),
    ],
    ids=["1e309", "Infinity", "-1e300", "NaN-required", "csv-inf", "csv-1e309"],
)
def test_values_the_model_cannot_take_are_client_errors(content_type, body) -> None:
    with pytest.raises(InputError, match="column 'carat'"):
        parse_invocation(body, content_type, CONTRACT)


@pytest.mark.parametrize("opening", [b"[", b'{"inputs": '])
def test_deeply_nested_json_is_a_client_error(opening) -> None:
    closing = b"]" if opening == b"[" else b"}"
    body = opening * 20_000 + closing * 20_000
    with pytest.raises(InputError, match="nested too deeply"):
        parse_invocation(body, "application/json", CONTRACT)


PLAIN_CSV = b"carat,cut\n0.3,Ideal\n1.5,Good\n"


@pytest.mark.parametrize(
    "body",
    [
        "\ufeffcarat,cut\n0.3,Ideal\n1.5,Good\n".encode(),
        b"carat,cut\r\n0.3,Ideal\r\n1.5,Good\r\n",
        b'cut,carat\n"Ideal",0.3\nGood,1.5\n',
        b'extra,carat,cut\nx,0.3,Ideal\n"y, and\nmore",1.5,Good\n',
        b"carat,cut\n0.30,Ideal\n1.5,Good",
    ],
    ids=["bom", "crlf", "another-order", "extra-column-quoted", "no-final-newline"],
)
def test_csv_forms_read_as_the_plain_csv(body: bytes) -> None:
    want = parse_invocation(PLAIN_CSV, "text/csv", CONTRACT)
    pd.testing.assert_frame_equal(parse_invocation(body, "text/csv", CONTRACT), want)


def test_quoted_csv_fields_keep_commas_quotes_and_line_breaks() -> None:
    body = b'carat,cut\n0.3,"Very, ""good""\nindeed"\n'
    assert parse_invocation(body, "text/csv", CONTRACT)["cut"][0] == 'Very, "good"\nindeed'


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "the CSV body is empty"),
        (b"\n \n", "the CSV body is empty"),
        (b"carat,cut\n", "no rows"),
        (b"carat\n0.3\n", "missing required column"),
    ],
    ids=["empty", "blank", "header-only", "lacks-a-column"],
)
def test_csv_without_rows_is_a_client_error(body: bytes, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        parse_invocation(body, "text/csv", CONTRACT)


# --- /predict_batch bodies: checked columns, the record model's judgement -----------------------

EVERY_TYPE = Contract(
    [
        Column("carat", "double"),
        Column("weight", "float"),
        Column("year", "long"),
        Column("count", "integer"),
        Column("cut", "string"),
        Column("sex", "string", required=False),
        Column("mass", "double", required=False),
        Column("rings", "long", required=False),
        Column("shiny", "boolean", required=False),
    ]
)
GOOD = {"carat": 0.3, "weight": 1.5, "year": 2007, "count": 3, "cut": "Ideal"}
FULL = {**GOOD, "sex": "f", "mass": 3.5, "rings": 2, "shiny": False}  # every column
VALUES = [
    None, 0, 1, -7, 2.5, 3.0, 1e300, 1e31, -1e29, 2**63, 2**31, "x", "", True, False, [1], {},
]  # fmt: skip


def record_model_records(body: bytes, contract: Contract = EVERY_TYPE) -> list[dict] | None:
    """What the record model (BentoML's parse of the API's body) makes of ``body``: the
    records as it dumps them, or None if it refuses the body."""
    from pydantic import ValidationError

    from serving.schema import build_record_model

    Record = build_record_model(contract)  # noqa: N806
    try:
        data = json.loads(body)
        return [Record.model_validate(r).model_dump(by_alias=True) for r in data]
    except (ValidationError, TypeError, AttributeError, ValueError):  # ValueError: not JSON
        return None


def test_parsed_records_take_exactly_what_the_record_model_takes() -> None:
    """Seeded bodies of good and bad values in every column type: the columnar check takes a
    body only if the record model takes it, and gives the frame the record model's records
    make (same values, same dtypes); a body it leaves to the record model, the model refuses
    or takes as it is."""
    import random

    from inference.contract import records_frame
    from serving.protocol import parse_records

    rng = random.Random(0)
    taken = left = 0
    for _ in range(400):
        rows = [dict(rng.choice([GOOD, FULL])) for _ in range(rng.randint(1, 4))]
        for row in rows:
            for _ in range(rng.randint(0, 2)):
                name = rng.choice([*EVERY_TYPE.features, "colour"])
                if rng.random() < 0.1:
                    row.pop(name, None)
                else:
                    row[name] = rng.choice(VALUES)
        body = json.dumps(rows).encode()
        checked, judged = parse_records(body, EVERY_TYPE), record_model_records(body)
        if checked is None:
            left += 1
            continue
        taken += 1
        assert judged is not None, body
        pd.testing.assert_frame_equal(checked, records_frame(judged, EVERY_TYPE), check_exact=True)
    assert taken > 50 and left > 50  # both ways were exercised


@pytest.mark.parametrize(
    "body",
    [b"[]", b"{}", b"[{]", b"[1]", b'{"carat": 0.3}', b"[NaN]", json.dumps([GOOD] * 3).encode()],
    ids=["empty", "object", "malformed", "not-records", "one-record", "nan", "over-max-rows"],
)
def test_bodies_that_are_not_records_are_left_to_the_record_model(body: bytes) -> None:
    from serving.protocol import parse_records

    assert parse_records(body, EVERY_TYPE, max_rows=2) is None


@pytest.mark.parametrize("names", [["cut"], ["carat", "cut"]], ids=["one-column", "two-columns"])
def test_records_of_few_columns_read_as_the_record_model_reads_them(names: list) -> None:
    """Records holding every column of a model of one text column (a record's value is text:
    no reading may take its letters for values), or of two, give the frame the record model's
    records give."""
    from inference.contract import records_frame
    from serving.protocol import parse_records

    contract = Contract([c for c in EVERY_TYPE.columns if c.name in names])
    records = [{n: FULL[n] for n in names}, {n: GOOD[n] for n in names}]
    got = parse_records(json.dumps(records).encode(), contract)
    assert got is not None
    pd.testing.assert_frame_equal(got, records_frame(records, contract), check_exact=True)


# Optional columns before required ones, and names no Python name could be.
ODD_NAMES = Contract(
    [
        Column("price ($)", "double", required=False),
        Column("a b", "long"),
        Column("c.d", "string"),
        Column("é", "boolean", required=False),
    ]
)


@pytest.mark.parametrize(
    ("body", "taken"),
    [
        (b'[{"a b": 1, "c.d": "x"}]', True),
        (b'[{"c.d": "x", "a b": 1, "price ($)": 2.5, "\u00e9": true}]', True),
        (b'[{"a b": 1, "c.d": "x", "a b": 2}]', True),
        (b'[{"a\u0020b": 1, "c.d": "x"}]', True),
        (b'[{"a b": 1, "c.d": "x", "price ($)": 18446744073709551616}]', True),
        (b'[{"a b": 1, "c.d": "x", "price ($)": null}]', True),
        (b'[{"a b": 18446744073709551616, "c.d": "x"}]', False),
        (b'[{"a b": 1, "c.d": "x", "price ($)": -1e400}]', False),
        (b'[{"a b": 1, "c.d": "x", "price ($)": [1]}]', False),
        (b'[{"a b": 1, "c.d": "x", "colour": 3}]', False),
        (b'[{"c.d": "x"}]', False),
        (b'[{"a b": 1, "c.d": "x"}, 7]', False),
        (b'\xef\xbb\xbf[{"a b": 1, "c.d": "x"}]', False),
        (b'[{"a b": 1, "c.d": "\xff"}]', False),
        (b'[{"a b": 1, "c.d": "x"}] []', False),
    ],
    ids=[
        "required-only", "every-column", "repeated-key", "escaped-key", "big-int-double",
        "null-optional", "int-over-64-bits", "beyond-double", "nested", "unknown-key",
        "missing-required", "not-a-record", "bom", "not-utf8", "trailing",
    ],
)  # fmt: skip
def test_record_bodies_read_as_the_record_model_reads_them(body: bytes, taken: bool) -> None:
    """Keys and values at the edges of JSON, in a model whose optional columns come first and
    whose names are not Python names: a body is read into the frame the record model's
    records give (a repeated key: the last; a missing optional column: None), or left to the
    record model, which names the problem (or takes it: a byte order mark)."""
    assert_read_as_the_record_model_reads(body, ODD_NAMES, taken)


def assert_read_as_the_record_model_reads(body: bytes, contract: Contract, taken: bool) -> None:
    """``parse_records`` takes ``body`` exactly when ``taken``, and then gives the frame the
    record model's records give."""
    from inference.contract import records_frame
    from serving.protocol import parse_records

    got = parse_records(body, contract)
    assert (got is not None) is taken
    if taken:
        judged = record_model_records(body, contract)
        assert judged is not None
        pd.testing.assert_frame_equal(got, records_frame(judged, contract), check_exact=True)


def test_record_bodies_read_their_numbers_exactly() -> None:
    """Seeded doubles of every magnitude a double column takes (subnormal to 1e30), written
    shortest (repr), with 17 digits, and as integers: each is read as the double Python's
    own parser makes of its text, bit for bit."""
    import random

    import numpy as np

    from serving.protocol import parse_records

    rng = random.Random(0)
    values = [rng.uniform(-1, 1) * 10.0 ** rng.randint(-320, 29) for _ in range(3000)]
    texts = [repr(v) for v in values] + [f"{v:.17g}" for v in values]
    texts += [str(rng.randint(-(2**60), 2**60)) for _ in range(500)] + ["0.1", "5e-324", "-0.0"]
    body = "[" + ",".join(f'{{"carat": {t}, "cut": "Ideal"}}' for t in texts) + "]"
    got = parse_records(body.encode(), CONTRACT)
    assert got is not None
    expected = np.array([float(t) for t in texts])
    assert got["carat"].to_numpy().view(np.int64).tolist() == expected.view(np.int64).tolist()


QUOTED_NAMES = Contract(
    [
        Column('the "quoted" one', "double"),
        Column("back\\slash", "string"),
        Column("tab\there", "long", required=False),
    ]
)


@pytest.mark.parametrize(
    ("records", "taken"),
    [
        ([{'the "quoted" one': 1.5, "back\\slash": "x", "tab\there": 3}], True),
        (
            [
                {'the "quoted" one': 1.5, "back\\slash": "x"},
                {'the "quoted" one': 2, "back\\slash": "y"},
            ],
            True,
        ),
        ([{'the "quoted" one': 1.5, "back\\slash": "x", "colour": 3}], False),
        ([{"back\\slash": "x"}], False),
        ([{'the "quoted" one': 1.5, "back\\slash": "x"}, 7], False),
    ],
    ids=["every-column", "missing-optional", "unknown-key", "missing-required", "not-a-record"],
)  # fmt: skip
def test_records_of_names_with_quotes_read_as_the_record_model_reads_them(
    records: list, taken: bool
) -> None:
    """Column names holding a quote, a backslash or a control character (which msgspec takes
    for no field): the records are still read into the frame the record model's give."""
    assert_read_as_the_record_model_reads(json.dumps(records).encode(), QUOTED_NAMES, taken)
