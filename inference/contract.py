"""The model contract: its MLflow signature as typed columns, and the one type table.

Two ways to fit data to the contract, over the same table:

- :func:`validate` (the service): strict. A value of the wrong type is refused (no "1.5" for a
  number, no 2007.0 for an integer column), with an :class:`InputError` naming the column and
  row.
- :func:`coerce` (the clients, reading files): lenient. Text that reads as a number becomes
  one, numbers in a text column become text; only what cannot be converted is refused.

Both hand the model the frame training saw: each column in the pandas dtype of
:func:`dtype_for`, missing values as NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inference.errors import InputError, ModelRefused


@dataclass(frozen=True)
class ColumnType:
    """How one MLflow column type is held in each place a value travels."""

    python: type  # a JSON value of the column (pydantic records, JSON requests)
    dtype: str  # the pandas dtype when no value is missing
    spark: str  # the Spark SQL type
    # The smallest and largest value the model can take (inclusive), or None: no bound.
    bounds: tuple[float, float] | None = None


# scikit-learn's trees (every tagserve estimator) cast their input to float32: a magnitude
# beyond float32's (3.4e38) becomes infinity there and the model call raises, for every
# request merged with it. The bound sits well inside it, at 1e30, because the preprocessing
# comes first: a scaler divides by a column's spread, so a value just under float32's limit
# still overflows after it (a 400 from the model, not a promise kept by the schema). 1e30 is
# beyond any measurement and stays finite through any spread above 3e-9. Refused as input,
# in double columns too, with the same number in the API's schema.
FEATURE_LIMIT = 1e30
FLOAT_BOUNDS = (-FEATURE_LIMIT, FEATURE_LIMIT)
INT64_BOUNDS = (int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max))
INT32_BOUNDS = (int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max))

# The MLflow ColSpec types a tagserve model may take.
TYPES: dict[str, ColumnType] = {
    "double": ColumnType(float, "float64", "double", FLOAT_BOUNDS),
    "float": ColumnType(float, "float32", "float", FLOAT_BOUNDS),
    "long": ColumnType(int, "int64", "bigint", INT64_BOUNDS),
    "integer": ColumnType(int, "int32", "int", INT32_BOUNDS),
    "boolean": ColumnType(bool, "bool", "boolean"),
    "string": ColumnType(str, "object", "string"),
}
NUMBER_TYPES = ("double", "float", "long", "integer")
INTEGER_TYPES = ("long", "integer")


def value_problem(kind: str, value: Any) -> str | None:
    """Why a model cannot take ``value`` (of the column's Python type) in a column of MLflow
    type ``kind``, or None if it can: not finite, or beyond the type's :attr:`~ColumnType.bounds`.

    The one value rule of every path: the service's records and frames, and the clients.
    """
    bounds = TYPES[kind].bounds
    if bounds is None or value is None or isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return f"{value} is not a finite number"
    low, high = bounds
    if low <= value <= high:
        return None
    return (
        f"{_shown(value)} is outside the range the model takes for a {kind} column "
        f"({_shown(low)} to {_shown(high)})"
    )


def _shown(number: Any) -> str:
    """A number for an error message: integers exact (up to 30 digits), floats short."""
    if isinstance(number, int | np.integer):
        text = str(number)
        return text if len(text) <= 30 else f"{float(number):.8g}"
    return f"{float(number):.8g}"


def dtype_for(kind: str, missing: bool) -> str:
    """The pandas dtype of a column of MLflow type ``kind``, as pandas reads such data: an
    integer column with a missing value is float64 (NaN), a boolean one holds objects."""
    if missing and kind in INTEGER_TYPES:
        return "float64"
    if missing and kind == "boolean":
        return "object"
    return TYPES[kind].dtype


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # an MLflow ColSpec type, a key of TYPES
    required: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "required": self.required}


@dataclass
class Contract:
    """What a model takes and gives: input columns, task, classes, the MLmodel metadata."""

    columns: list[Column]
    task: str = "regression"
    classes: list[Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def dtypes(self) -> dict[str, str]:
        """The dtype to read each column as (a missing value may still widen it)."""
        return {c.name: TYPES[c.type].dtype for c in self.columns}

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """The signature's inputs, as MLflow writes them."""
        return [c.as_dict() for c in self.columns]


def contract_from_signature(
    inputs: Sequence[Mapping[str, Any]] | None, metadata: Mapping[str, Any] | None = None
) -> Contract:
    """A contract from MLflow signature inputs and the MLmodel ``metadata:`` (or an imported
    model's metadata, or a service's ``/metadata``): columns in ``feature_columns`` order.

    Raises:
        ModelRefused: No column-based signature, or a column type tagserve cannot serve.
    """
    metadata = dict(metadata or {})
    inputs = list(inputs or [])
    if not inputs or any(not isinstance(c, Mapping) or "name" not in c for c in inputs):
        raise ModelRefused("the model has no column-based MLflow signature (named columns)")
    unknown = [f"{c['name']} ({c.get('type')})" for c in inputs if c.get("type") not in TYPES]
    if unknown:
        raise ModelRefused(
            f"the model's signature has column(s) of a type tagserve does not serve: "
            f"{', '.join(unknown)} (it serves {', '.join(TYPES)})"
        )
    columns = [Column(c["name"], c["type"], bool(c.get("required", True))) for c in inputs]
    order = metadata.get("feature_columns")
    if order and sorted(order) == sorted(c.name for c in columns):
        by_name = {c.name: c for c in columns}
        columns = [by_name[name] for name in order]
    classes = metadata.get("classes")
    return Contract(
        columns=columns,
        task=str(metadata.get("task") or "regression"),
        classes=list(classes) if classes is not None else None,
        metadata=metadata,
    )


def read_mlmodel(folder: Path) -> dict[str, Any]:
    """The ``MLmodel`` file of the MLflow model ``folder``, parsed as plain YAML.

    Raises:
        ModelRefused: No MLmodel file, or not a YAML mapping.
    """
    import yaml

    path = Path(folder) / "MLmodel"
    if not path.is_file():
        raise ModelRefused(f"{folder} is not an MLflow model folder (no MLmodel file)")
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelRefused(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(spec, dict):
        raise ModelRefused(f"{path} is not an MLmodel file (not a YAML mapping)")
    return spec


def signature_of(mlmodel: Mapping[str, Any]) -> dict[str, Any]:
    """The MLmodel's ``signature:`` with its JSON strings parsed (``{"inputs": [...], ...}``)."""
    raw = mlmodel.get("signature") or {}
    out = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            raise ModelRefused(f"the MLmodel signature's {key} is not valid JSON") from None
    return out


def read_contract(folder: Path) -> Contract:
    """The contract of the MLflow model ``folder``, from its MLmodel file (nothing loaded)."""
    mlmodel = read_mlmodel(folder)
    return contract_from_signature(
        signature_of(mlmodel).get("inputs"), mlmodel.get("metadata") or {}
    )


# --- the service: strict ---------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _is_integer(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


# MLflow column type -> (is the pandas dtype right as a whole?, is this one value right?)
_STRICT: dict[str, tuple[Any, Any]] = {
    "double": (
        lambda s: pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s),
        _is_number,
    ),
    "long": (pd.api.types.is_integer_dtype, _is_integer),
    "string": (lambda s: all(isinstance(v, str) for v in s), _is_text),
    "boolean": (pd.api.types.is_bool_dtype, _is_bool),
}
_STRICT["float"], _STRICT["integer"] = _STRICT["double"], _STRICT["long"]


def validate(frame: pd.DataFrame, contract: Contract, max_rows: int | None = None) -> pd.DataFrame:
    """The contract's columns of ``frame``, in order, typed as in training; extra columns are
    ignored (as MLflow does).

    Raises:
        InputError: No rows, more than ``max_rows``, a missing or repeated column, a null in a
            required column, or a value of the wrong type.
    """
    if len(frame) == 0:
        raise InputError("no rows: send at least one record")
    if max_rows is not None and len(frame) > max_rows:
        raise InputError(
            f"{len(frame)} rows is more than this service accepts in one request "
            f"({max_rows}, TAGSERVE_MAX_ROWS)"
        )
    absent = [c.name for c in contract.columns if c.required and c.name not in frame.columns]
    if absent:
        raise InputError(f"missing required column(s): {', '.join(map(repr, absent))}")
    frame = frame.reset_index(drop=True)
    columns = {}
    for col in contract.columns:
        series = frame[col.name] if col.name in frame.columns else None
        if series is None:
            series = pd.Series([None] * len(frame), dtype=object)
        elif isinstance(series, pd.DataFrame):
            raise InputError(f"column {col.name!r} appears more than once")
        columns[col.name] = _checked(series, col)
    return pd.DataFrame(columns)


def _checked(series: pd.Series, col: Column) -> pd.Series:
    """``series`` cast to the column's dtype, or InputError naming the column and rows."""
    missing = series.isna().to_numpy()
    if missing.any() and col.required:
        rows = np.flatnonzero(missing)[:5].tolist()
        raise InputError(f"column {col.name!r} is required but null in row(s) {rows}")
    present = series[~missing]
    whole_ok, value_ok = _STRICT[col.type]
    if not whole_ok(present):
        for row, value in present.items():
            if not value_ok(value):
                shown = json.dumps(value, default=str)
                raise InputError(
                    f"column {col.name!r} expects {col.type}, got {type(value).__name__} "
                    f"{shown} in row {row}"
                )
    check_values(present, col)
    try:
        return _typed(series, col.type, bool(missing.any()))
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"column {col.name!r}: {exc}") from None


def check_values(present: pd.Series, col: Column) -> None:
    """Raise InputError naming the column and row of the first value of ``present`` (no
    missing values, each of the column's type) that the model cannot take
    (:func:`value_problem`). Whole numeric columns are checked at once."""
    bounds = TYPES[col.type].bounds
    if bounds is None or present.empty:
        return
    if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
        values = present.to_numpy()
        bad = (values < bounds[0]) | (values > bounds[1])
        if values.dtype.kind == "f":
            bad |= ~np.isfinite(values)
        rows = np.flatnonzero(bad)
        candidates = present.iloc[rows[:1]].items()
    else:
        candidates = present.items()
    for row, value in candidates:
        problem = value_problem(col.type, value)
        if problem:
            raise InputError(f"column {col.name!r} in row {row}: {problem}")


def _typed(series: pd.Series, kind: str, missing: bool) -> pd.Series:
    """Checked values in :func:`dtype_for`'s dtype; missing text or booleans as NaN."""
    dtype = dtype_for(kind, missing)
    if dtype != "object":
        return series.astype(dtype)
    return series.astype(object).where(series.notna(), np.nan)


def records_frame(rows: Sequence[Mapping[str, Any]], contract: Contract) -> pd.DataFrame:
    """Records whose values already have their column's Python type (pydantic checked them)
    as the model's input frame, one numpy array per column (missing values: None).

    This is on every request's path: a per-column pandas ``astype`` costs about a millisecond
    more per request than building the arrays directly.
    """
    columns = {}
    for col in contract.columns:
        values = [row.get(col.name) for row in rows]
        dtype = dtype_for(col.type, any(v is None for v in values))
        if dtype == "object":
            columns[col.name] = np.array([np.nan if v is None else v for v in values], dtype=object)
        else:
            columns[col.name] = np.array(values, dtype=dtype)  # None -> NaN for floats
    return pd.DataFrame(columns)


# --- the clients: lenient --------------------------------------------------------------------


def coerce(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The contract's columns of ``frame`` (rows read from a file), in order, converted to
    their types: numbers read as text become numbers, numbers in a text column text. A
    missing optional column is added as all-missing.

    Raises:
        InputError: A required column is missing, or a value cannot be converted.
    """
    missing = [c.name for c in contract.columns if c.required and c.name not in frame.columns]
    if missing:
        raise InputError(f"input lacks model column(s): {', '.join(missing)}")
    out = {}
    for col in contract.columns:
        if col.name not in frame.columns:
            values = np.nan if col.type in NUMBER_TYPES else None
            dtype = dtype_for(col.type, True)
            out[col.name] = pd.Series(values, index=frame.index, dtype=dtype)
        else:
            out[col.name] = _converted(frame[col.name], col)
    return pd.DataFrame(out, index=frame.index)


def _converted(values: pd.Series, col: Column) -> pd.Series:
    if col.type == "string":
        if values.dtype == object:
            return values
        # Numbers or categories read where text is expected: text; missing stays missing.
        return (
            values.astype(object)
            .where(values.notna(), None)
            .map(lambda v: v if v is None or isinstance(v, str) else str(v))
        )
    dtype = dtype_for(col.type, bool(values.isna().any()))
    try:
        numbers = pd.to_numeric(values, errors="raise") if col.type in NUMBER_TYPES else values
    except (TypeError, ValueError) as exc:
        bad = _first_bad(values)
        raise InputError(f"column {col.name!r} must hold {col.type} values, got {bad!r}") from exc
    check_values(numbers[numbers.notna()], col)
    if values.dtype == dtype:
        return values
    try:
        return numbers.astype(dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        bad = _first_bad(values)
        raise InputError(f"column {col.name!r} must hold {col.type} values, got {bad!r}") from exc


def _first_bad(values: pd.Series) -> Any:
    for v in values:
        try:
            float(v)
        except (TypeError, ValueError):
            return v
    return values.iloc[0] if len(values) else None


def json_records(frame: pd.DataFrame, contract: Contract) -> list[dict[str, Any]]:
    """The rows of a coerced ``frame`` as JSON records a service accepts: each value of its
    column's Python type, missing values as null."""
    names = contract.features
    values = [_json_values(frame[c.name], c.type) for c in contract.columns]
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


def _json_values(series: pd.Series, kind: str) -> list[Any]:
    to = TYPES[kind].python
    out = []
    for v in series.tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif to is not str:
            out.append(to(v))
        else:
            out.append(v)
    return out


def plain(value: Any) -> Any:
    """A numpy scalar as its JSON-able Python value (a non-finite float as None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
