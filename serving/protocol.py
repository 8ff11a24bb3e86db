"""The MLflow scoring protocol (``mlflow models serve``'s ``POST /invocations``) as plain
functions: a body and its content type -> the model's input frame, or an error worded for the
client. No server needed, as in MLflow's own ``pyfunc/scoring_server``.

JSON bodies hold exactly one of ``dataframe_split``, ``dataframe_records``, ``instances`` or
``inputs``; ``text/csv`` bodies are a header line and rows.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from inference.contract import Contract, validate
from inference.errors import InputError

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
        frame = parse_mlflow_json(body, contract.features)
    elif mime == CSV:
        frame = parse_mlflow_csv(body, contract)
    else:
        raise UnsupportedMediaType(f"unsupported content type {mime!r}: use {JSON} or {CSV}")
    return validate(frame, contract, max_rows)


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


def _frame_from_rows(rows: Any, names: Sequence[str], what: str) -> pd.DataFrame:
    if not isinstance(rows, list):
        raise InputError(f"{what} must be a list of records or of rows")
    if rows and all(isinstance(r, dict) for r in rows):
        return pd.DataFrame.from_records(rows)
    if rows and all(isinstance(r, list) for r in rows):
        bad = [i for i, r in enumerate(rows) if len(r) != len(names)]
        if bad:
            raise InputError(
                f"{what}: row {bad[0]} has {len(rows[bad[0]])} values, the model takes "
                f"{len(names)} ({', '.join(names)})"
            )
        return pd.DataFrame(rows, columns=list(names), dtype=object).infer_objects()
    if not rows:
        raise InputError("no rows: send at least one record")
    raise InputError(f"{what} must be a list of records (objects) or of rows (lists)")


def load_json(body: bytes | str) -> Any:
    """``body`` parsed as JSON.

    Raises:
        InputError: Not JSON, not UTF-8, or nested too deeply for the parser (which raises
            RecursionError, not ValueError, on e.g. 20,000 ``[``).
    """
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError("the body is not valid JSON: nested too deeply") from None


def parse_mlflow_json(body: bytes, names: Sequence[str]) -> pd.DataFrame:
    """An MLflow scoring-protocol JSON body as a DataFrame (columns not checked yet)."""
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
        return _dataframe_split(data, names)
    if key == "dataframe_records":
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError("dataframe_records must be a list of records (objects)")
        if not data:
            raise InputError("no rows: send at least one record")
        return pd.DataFrame.from_records(data)
    # instances / inputs: records, rows, or columns ({"name": [values]} or one value each)
    if isinstance(data, dict):
        values = list(data.values())
        if all(isinstance(v, list) for v in values):
            lengths = {len(v) for v in values}
            if len(lengths) > 1:
                raise InputError(f"{key}: the columns have different lengths {sorted(lengths)}")
            return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in data.items()})
        if any(isinstance(v, list | dict) for v in values):
            raise InputError(f"{key}: give every column a list of values, or one value each")
        return pd.DataFrame({k: pd.Series([v], dtype=object) for k, v in data.items()})
    return _frame_from_rows(data, names, key)


def _dataframe_split(data: Any, names: Sequence[str]) -> pd.DataFrame:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise InputError('dataframe_split must be {"columns": [...], "data": [[...], ...]}')
    columns = data.get("columns")
    rows = data["data"]
    if not rows:
        raise InputError("no rows: send at least one record")
    if not all(isinstance(r, list) for r in rows):
        raise InputError("dataframe_split.data must be a list of rows (lists)")
    if columns is None:
        return _frame_from_rows(rows, names, "dataframe_split.data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InputError("dataframe_split.columns must be a list of column names")
    bad = [i for i, r in enumerate(rows) if len(r) != len(columns)]
    if bad:
        raise InputError(
            f"dataframe_split: row {bad[0]} has {len(rows[bad[0]])} values for "
            f"{len(columns)} columns"
        )
    return pd.DataFrame(rows, columns=columns, dtype=object).infer_objects()


def parse_mlflow_csv(body: bytes, contract: Contract) -> pd.DataFrame:
    """A CSV body (header line first) as a DataFrame; text columns are read as text."""
    strings = {c.name: str for c in contract.columns if c.type == "string"}
    try:
        return pd.read_csv(io.StringIO(body.decode("utf-8")), dtype=strings)
    except UnicodeDecodeError as exc:
        raise InputError(f"the CSV body is not UTF-8: {exc}") from None
    except (ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        raise InputError(f"the body is not valid CSV: {' '.join(str(exc).split())}") from None


def example_frame(body: bytes, contract: Contract) -> pd.DataFrame:
    """A model's own ``serving_input_example.json`` as its checked input frame."""
    return validate(parse_mlflow_json(body, contract.features), contract)
