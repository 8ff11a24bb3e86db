"""The MLflow scoring protocol (``mlflow models serve``'s ``POST /invocations``) as plain
functions: a body and its content type -> the model's input frame, or an error worded for the
client. No server needed, as in MLflow's own ``pyfunc/scoring_server``.

JSON bodies hold exactly one of ``dataframe_split``, ``dataframe_records``, ``instances`` or
``inputs``; ``text/csv`` bodies are a header line and rows.
"""

from __future__ import annotations

import functools
import io
import json
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
from msgspec.structs import astuple

from inference.contract import TYPES, Contract, validate, validate_columns
from inference.errors import InputError

if TYPE_CHECKING:  # imported where used: `bentoml serve` defines the service without pandas
    import pandas as pd

MLFLOW_JSON_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON, CSV = "application/json", "text/csv"


class UnsupportedMediaType(InputError):
    """A content type or charset the scoring server does not take (HTTP 415)."""


def parse_invocation(
    body: bytes, content_type: str | None, contract: Contract, max_rows: int | None = None
) -> pd.DataFrame:
    """The model's input frame for an ``/invocations`` request, checked against the contract.

    Raises:
        UnsupportedMediaType: Neither JSON nor CSV, or not UTF-8.
        InputError: A body that is not the protocol, or rows that do not fit the contract.
    """
    mime, options = media_type(content_type or JSON)
    if options.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("the scoring server only supports UTF-8")
    if mime in (JSON, ""):
        if not body.strip():
            raise InputError(
                "the body is empty: send a JSON object (dataframe_split, dataframe_records, "
                "instances or inputs) or text/csv"
            )
        columns, rows = parse_mlflow_json(body, contract.features, max_rows)
        return validate_columns(columns, rows, contract, max_rows)
    if mime == CSV:
        # A CSV body's rows are named as a person counts them: the first after the header is 1.
        return validate(parse_mlflow_csv(body, contract), contract, max_rows, first_row=1)
    raise UnsupportedMediaType(f"unsupported content type {mime!r}: use {JSON} or {CSV}")


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """``'Text/CSV; Charset="utf-8"'`` -> ``("text/csv", {"charset": "utf-8"})``: the type and
    parameter names lowercased (HTTP compares them case-insensitively), values unquoted."""
    mime, *params = (part.strip() for part in content_type.split(";"))
    options = {}
    for param in params:
        name, _, value = param.partition("=")
        if name.strip():
            options[name.strip().lower()] = value.strip().removeprefix('"').removesuffix('"')
    return mime.lower(), options


# A request's columns: name -> that column's JSON values (a list), with the number of rows.
Columns = tuple[dict[str, list[Any]], int]


def load_json(body: bytes | str) -> Any:
    """``body`` parsed as JSON, with orjson (strict RFC 8259, and fast); what orjson refuses is
    read again by the standard library, which MLflow's scoring server uses: it takes numbers
    beyond a double (1e309, as infinity) and the NaN and Infinity that MLflow itself writes in
    input examples, so that the contract can name the column and row of such a value.

    Raises:
        InputError: Not JSON, not UTF-8, or nested too deeply for the parser.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        strict_error = exc
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"the body is not valid JSON: {strict_error}") from None
    except RecursionError:  # e.g. 20,000 "["
        raise InputError("the body is not valid JSON: nested too deeply") from None


def _rows_of(rows: list[Any], names: Sequence[str], what: str) -> Columns:
    """Rows (lists of values in ``names``' order) as columns."""
    if set(map(len, rows)) != {len(names)}:
        bad = next(i for i, r in enumerate(rows) if len(r) != len(names))
        raise InputError(
            f"{what}: row {bad} has {len(rows[bad])} values, the model takes "
            f"{len(names)} ({', '.join(names)})"
        )
    return dict(zip(names, _transposed(rows, len(names)), strict=True)), len(rows)


def _transposed(rows: list[Any], width: int) -> list[list[Any]]:
    """Rows (lists or tuples) of ``width`` values each as columns, a list each, read at C
    speed (a value that is itself a list stays one value)."""
    return [list(map(operator.itemgetter(j), rows)) for j in range(width)]


def _records_of(records: list[dict[str, Any]], names: Sequence[str]) -> Columns:
    """Records (objects) as the columns of ``names`` some record holds; a key a record lacks
    is a missing value there, as pandas reads records; other keys are ignored (as MLflow)."""
    held = [name for name in names if any(name in r for r in records)]
    return {name: [r.get(name) for r in records] for name in held}, len(records)


def _rows_or_records(data: Any, names: Sequence[str], what: str) -> Columns:
    if not isinstance(data, list):
        raise InputError(f"{what} must be a list of records or of rows")
    if not data:
        raise InputError("no rows: send at least one record")
    if all(isinstance(r, dict) for r in data):
        return _records_of(data, names)
    if all(isinstance(r, list) for r in data):
        return _rows_of(data, names, what)
    raise InputError(f"{what} must be a list of records (objects) or of rows (lists)")


def _row_count(data: Any, max_rows: int | None) -> None:
    """Refuse too many rows before building any column."""
    if max_rows is not None and isinstance(data, list) and len(data) > max_rows:
        raise InputError(
            f"{len(data)} rows is more than this service accepts in one request "
            f"({max_rows}, TAGSERVE_MAX_ROWS)"
        )


def parse_mlflow_json(body: bytes, names: Sequence[str], max_rows: int | None = None) -> Columns:
    """An MLflow scoring-protocol JSON body as columns (each a list of JSON values) and its
    row count; the values are not checked yet (:func:`inference.contract.validate_columns`)."""
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise InputError(
            "the body must be a JSON object with one of the keys "
            f"{', '.join(MLFLOW_JSON_KEYS)} (the MLflow scoring protocol)"
        )
    keys = [k for k in MLFLOW_JSON_KEYS if k in payload]
    if len(keys) != 1:
        raise InputError(
            f"the body must have exactly one of the keys {', '.join(MLFLOW_JSON_KEYS)}; it "
            f"has {sorted(payload) if payload else 'none'}"
        )
    key = keys[0]
    data = payload[key]
    if key == "dataframe_split":
        return _dataframe_split(data, names, max_rows)
    _row_count(data, max_rows)
    if key == "dataframe_records":
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError("dataframe_records must be a list of records (objects)")
        if not data:
            raise InputError("no rows: send at least one record")
        return _records_of(data, names)
    # instances / inputs: records, rows, or columns ({"name": [values]} or one value each)
    if isinstance(data, dict):
        values = list(data.values())
        if values and all(isinstance(v, list) for v in values):
            lengths = {len(v) for v in values}
            if len(lengths) > 1:
                raise InputError(f"{key}: the columns have different lengths {sorted(lengths)}")
            rows = lengths.pop()
            _row_count([None] * rows, max_rows)
            return {k: v for k, v in data.items() if k in names}, rows
        if any(isinstance(v, list | dict) for v in values):
            raise InputError(f"{key}: give every column a list of values, or one value each")
        return {k: [v] for k, v in data.items() if k in names}, 1
    return _rows_or_records(data, names, key)


def _dataframe_split(data: Any, names: Sequence[str], max_rows: int | None) -> Columns:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise InputError('dataframe_split must be {"columns": [...], "data": [[...], ...]}')
    columns = data.get("columns")
    rows = data["data"]
    if not rows:
        raise InputError("no rows: send at least one record")
    _row_count(rows, max_rows)
    if set(map(type, rows)) != {list}:
        raise InputError("dataframe_split.data must be a list of rows (lists)")
    if columns is None:
        return _rows_of(rows, names, "dataframe_split.data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InputError("dataframe_split.columns must be a list of column names")
    repeated = sorted({c for c in columns if columns.count(c) > 1 and c in names})
    if repeated:
        raise InputError(f"column {repeated[0]!r} appears more than once")
    bad = (
        []
        if set(map(len, rows)) == {len(columns)}
        else [i for i, r in enumerate(rows) if len(r) != len(columns)]
    )
    if bad:
        raise InputError(
            f"dataframe_split: row {bad[0]} has {len(rows[bad[0]])} values for "
            f"{len(columns)} columns"
        )
    if columns == list(names):
        return _rows_of(rows, names, "dataframe_split.data")
    split = _rows_of(rows, columns, "dataframe_split.data")[0]
    return {name: values for name, values in split.items() if name in names}, len(rows)


def parse_records(
    body: bytes, contract: Contract, max_rows: int | None = None
) -> pd.DataFrame | None:
    """A ``/predict_batch`` body (a JSON list of records) as the model's input frame, checked
    as ``/invocations`` checks its columns (:func:`inference.contract.validate_columns`, a
    column at a time); or None when the body is anything but records the record model takes
    as they are. The record model then reads the body itself and names the field and row of
    each problem in its own words: this check only ever takes what the record model takes,
    and makes of it the frame :func:`inference.contract.records_frame` makes of the record
    model's records (no unknown field, every required one present, a missing optional one
    None)."""
    try:
        records = _records_reader(_record_keys(contract))(body)
    except (msgspec.MsgspecError, orjson.JSONDecodeError, RecursionError):  # too deep: msgspec
        return None
    if not records or (max_rows is not None and len(records) > max_rows):
        return None
    columns = dict(zip(contract.features, map(list, zip(*records, strict=True)), strict=True))
    try:
        return validate_columns(columns, len(records), contract)
    except InputError:
        return None


def _record_keys(contract: Contract) -> tuple[tuple[str, bool], ...]:
    return tuple((c.name, c.required) for c in contract.columns)


@functools.lru_cache(maxsize=16)
def _records_reader(keys: tuple[tuple[str, bool], ...]) -> Callable[[bytes], list[Any] | None]:
    """What reads a JSON list of records of the columns ``keys`` (name, required) into each
    record's values in the columns' order (a tuple a record), or None for other JSON.

    msgspec reads each record into a small object with the columns as its fields (named by
    position, since a column's name need not be a Python name, and renamed to the columns'),
    untracked by the collector (a record holds only JSON values, never itself): a dict a
    record, as orjson makes, cost more than the rest of the reading. msgspec takes no field
    name holding a quote, a backslash or a control character: such a model's records are
    read by orjson, into dicts."""
    fields = [(f"c{j}", Any) if req else (f"c{j}", Any, None) for j, (_, req) in enumerate(keys)]
    names = {f"c{j}": name for j, (name, _) in enumerate(keys)}
    try:
        record = msgspec.defstruct(
            "Record", fields, rename=names, forbid_unknown_fields=True, gc=False, kw_only=True
        )
    except ValueError:
        return functools.partial(_dict_records, keys=keys)
    decoder = msgspec.json.Decoder(list[record])
    return lambda body: list(map(astuple, decoder.decode(body)))


def _dict_records(body: bytes, keys: tuple[tuple[str, bool], ...]) -> list[Any] | None:
    names = [name for name, _ in keys]
    known, required = set(names), {name for name, req in keys if req}
    data = orjson.loads(body)
    if type(data) is not list or not all(
        type(r) is dict and r.keys() <= known and required <= r.keys() for r in data
    ):
        return None
    return [tuple(map(r.get, names)) for r in data]


def parse_mlflow_csv(body: bytes, contract: Contract) -> pd.DataFrame:
    """A CSV body as a DataFrame: a header line naming the columns (in any order; columns the
    model does not take are ignored), then one line per row. Text columns are read as text,
    numbers as the exact double they spell (as JSON's are); a UTF-8 byte order mark, CRLF
    line ends and quoted fields holding commas, quotes or line breaks are taken.

    Raises:
        InputError: An empty body, a header line alone (no rows), not UTF-8, or not CSV.
    """
    import pandas as pd

    strings = {c.name: str for c in contract.columns if TYPES[c.type].python is str}
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"the CSV body is not UTF-8: {exc}") from None
    if not text.strip():
        raise InputError(
            "the CSV body is empty: send a header line naming the columns, then a line per row"
        )
    try:
        return pd.read_csv(io.StringIO(text), dtype=strings, float_precision="round_trip")
    except (ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        raise InputError(f"the body is not valid CSV: {' '.join(str(exc).split())}") from None


def example_frame(body: bytes, contract: Contract) -> pd.DataFrame:
    """A model's own ``serving_input_example.json`` as its checked input frame."""
    import json

    payload = json.loads(body)
    return parse_invocation(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), JSON, contract
    )
