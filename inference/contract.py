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
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.domain import DOMAIN_METADATA, Policy, Range, category_problem
from inference.errors import InputError, ModelRefused
from inference.strict_json import plain

if TYPE_CHECKING:
    import pandas as pd

# pandas is imported where a function needs it: `bentoml serve` reads the contract to define
# the service (record types, the OpenAPI document) and has no use for pandas.


@dataclass(frozen=True)
class ColumnType:
    """How one MLflow column type is held in each place a value travels: the one table every
    path reads (the service's schema and OpenAPI document, its validation, the clients, Spark,
    CSV), so that what a type accepts is decided once."""

    python: type  # a JSON value of the column (pydantic records, JSON requests)
    json_type: str  # its JSON Schema type (the OpenAPI document)
    dtype: str  # the pandas dtype when no value is missing
    spark: str  # the Spark SQL type
    # One CSV value of the type in its plain form (the OpenAPI document's CSV pattern): numbers
    # in decimal notation within float32 and int32, text any unquoted field but the words pandas
    # reads as missing (serving.openapi adds that look-ahead).
    csv_value: str
    # The smallest and largest value the model can take (inclusive), or None: no bound.
    bounds: tuple[float, float] | None = None
    # Integers: JSON Schema counts 3504.0 as an integer, and pandas writes an integer column
    # holding a missing value as floats, so a number with no fractional part is taken as the
    # integer it is (scored exactly as that integer); 3.5 is refused.
    whole: bool = False
    # Whether the fast path's record entry builds this type exactly as records_frame does (not
    # float32, where sklearn computes in float32, nor boolean, an object column once missing).
    record_entry: bool = True

    @property
    def number(self) -> bool:
        return self.python in (int, float)


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
DECIMAL_CSV = r"-?(0|[1-9][0-9]{0,8})(\.[0-9]{1,8})?"
WHOLE_CSV = r"-?(0|[1-9][0-9]{0,8})(\.0{1,8})?"

# The MLflow ColSpec types a tagserve model may take.
TYPES: dict[str, ColumnType] = {
    "double": ColumnType(float, "number", "float64", "double", DECIMAL_CSV, FLOAT_BOUNDS),
    "float": ColumnType(
        float, "number", "float32", "float", DECIMAL_CSV, FLOAT_BOUNDS, record_entry=False
    ),
    "long": ColumnType(int, "integer", "int64", "bigint", WHOLE_CSV, INT64_BOUNDS, whole=True),
    "integer": ColumnType(int, "integer", "int32", "int", WHOLE_CSV, INT32_BOUNDS, whole=True),
    "boolean": ColumnType(
        bool,
        "boolean",
        "bool",
        "boolean",
        "(True|False|true|false|TRUE|FALSE)",
        record_entry=False,
    ),
    "string": ColumnType(str, "string", "object", "string", r'[^,"\n\r\x00][^,\n\r\x00]*'),
}
NUMBER_TYPES = tuple(name for name, t in TYPES.items() if t.number)
INTEGER_TYPES = tuple(name for name, t in TYPES.items() if t.whole)


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
    if isinstance(value, float | np.floating) and TYPES[kind].whole:
        within = float_within(kind, float(value))  # a float standing for an integer
    else:
        within = low <= value <= high
    if within:
        return None
    return (
        f"{_shown(value)} is outside the range the model takes for a {kind} column "
        f"({_shown(low)} to {_shown(high)})"
    )


def _shown(number: Any) -> str:
    """A number for an error message: integers exact (up to 30 digits), floats short."""
    if isinstance(number, int | np.integer):
        text = str(number)
        if len(text) <= 30:
            return text
        # Beyond 30 digits, shown short: as a float while one holds it, else by its digits.
        if abs(number) < 1e300:
            return f"{float(number):.8g}"
        return f"{text[:10]}... ({len(text.lstrip('-'))} digits)"
    return f"{float(number):.8g}"


def dtype_for(kind: str, missing: bool) -> str:
    """The pandas dtype of a column of MLflow type ``kind``, as pandas reads such data: an
    integer column with a missing value is float64 (NaN), a boolean one holds objects."""
    column = TYPES[kind]
    if missing and column.whole:
        return "float64"
    if missing and column.python is bool:
        return "object"
    return column.dtype


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # an MLflow ColSpec type, a key of TYPES
    required: bool = True
    # The model's domain (inference.domain), where enforced: the closed set of a categorical
    # text column, as trained; the bounds the pipeline's rules put on a number column.
    categories: tuple[Any, ...] | None = None
    range: Range | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "required": self.required}

    def domain_problem(self, value: Any) -> str | None:
        """Why ``value`` (of the column's type, not missing) is outside the column's domain,
        or None."""
        if self.categories is not None and value not in self.categories:
            return category_problem(value, self.categories)
        if (
            self.range is not None
            and not isinstance(value, bool)
            and not self.range.contains(value)
        ):
            return self.range.problem(value)
        return None

    @cached_property
    def category_set(self) -> frozenset[Any] | None:
        """The closed categories as a set (a whole column is checked against it in C), or
        None."""
        return None if self.categories is None else frozenset(self.categories)

    @cached_property
    def text_categories(self) -> frozenset[str] | None:
        """:attr:`category_set` of a text column whose categories are all text, else None."""
        if self.categories is None or TYPES[self.type].python is not str:
            return None
        if not all(type(c) is str for c in self.categories):
            return None
        return self.category_set

    def schema(self) -> dict[str, Any]:
        """The domain as JSON Schema words (``enum``, ``minimum``...), for the document."""
        if self.categories is not None:
            return {"enum": list(self.categories)}
        return self.range.schema() if self.range is not None else {}


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

    @property
    def domain(self) -> dict[str, Any]:
        """The model's recorded domain (``inference.domain``), enforced or not."""
        return dict(self.metadata.get(DOMAIN_METADATA) or {})

    def enforcing(self, policy: Policy) -> Contract:
        """This contract with only the parts of the domain ``policy`` refuses outside it: the
        other values are served as if the model had no domain."""
        columns = [
            replace(
                c,
                categories=c.categories if policy.refuse_unknown_categories else None,
                range=c.range if policy.refuse_out_of_range else None,
            )
            for c in self.columns
        ]
        return replace(self, columns=columns)


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
    columns = [_column(c, metadata.get(DOMAIN_METADATA)) for c in inputs]
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


def _column(spec: Mapping[str, Any], domain: Any) -> Column:
    """A signature input and its domain entry (a closed set for text, bounds for numbers)."""
    entry = domain.get(spec["name"]) if isinstance(domain, Mapping) else None
    entry = entry if isinstance(entry, Mapping) else {}
    categories = entry.get("categories")
    column_type = TYPES[spec["type"]]
    closed = column_type.python is str and isinstance(categories, list) and categories
    return Column(
        spec["name"],
        spec["type"],
        bool(spec.get("required", True)),
        categories=tuple(categories) if closed else None,
        range=Range.of(entry) if column_type.number else None,
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


def read_contract(folder: Path, domain: Mapping[str, Any] | None = None) -> Contract:
    """The contract of the MLflow model ``folder``, from its MLmodel file (nothing loaded),
    with the model's ``domain`` as its import recorded it (``inference.domain``), if given."""
    mlmodel = read_mlmodel(folder)
    metadata = dict(mlmodel.get("metadata") or {})
    if domain:
        metadata[DOMAIN_METADATA] = dict(domain)
    return contract_from_signature(signature_of(mlmodel).get("inputs"), metadata)


# --- the service: strict ---------------------------------------------------------------------


def strict_value(kind: str, value: Any) -> Any:
    """``value`` (not missing) as a column of MLflow type ``kind`` takes it, or ValueError: the
    one type rule of the service, for its records (pydantic) and its frames alike. Numbers are
    never read from text, text never from numbers, booleans are not numbers; an integer
    column takes a number with no fractional part as that integer. Finiteness and bounds are
    :func:`value_problem`'s (a non-finite float is passed on for it to name)."""
    column = TYPES[kind]
    if isinstance(value, bool | np.bool_):
        if column.python is bool:
            return bool(value)
    elif column.python is str:
        if isinstance(value, str):
            return value
    elif column.whole:
        if isinstance(value, int | np.integer):
            return int(value)
        if isinstance(value, float | np.floating):
            if not math.isfinite(value) or not float_within(kind, value):
                return float(value)  # value_problem names it
            if float(value).is_integer():
                return int(value)
            raise ValueError(f"{_shown(value)} is not a whole number")
    elif column.number and isinstance(value, int | float | np.integer | np.floating):
        return value
    raise ValueError("wrong type")


def parse_text(kind: str, text: str) -> Any:
    """A value typed as text (a command line's ``NAME=VALUE``) as a column of MLflow type
    ``kind`` takes it: numbers parsed (an integer column takes ``3504`` or ``3504.0``), text as
    it is, ``null``/``none`` as a missing value outside text columns.

    Raises:
        ValueError: The text is no value of the type.
    """
    column = TYPES[kind]
    if column.python is str:
        return text
    if text.lower() in ("null", "none"):
        return None
    if column.python is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{text!r} is not a {kind}")
        return text.lower() == "true"
    try:
        number: Any = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a {kind}") from None
    try:
        return strict_value(kind, float(number) if not column.whole else number)
    except ValueError:
        raise ValueError(f"{text!r} is not a {kind}") from None


def type_of_value(value: Any) -> str:
    """The MLflow type of a plain value (a class label): boolean, long, double or string."""
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, int | np.integer):
        return "long"
    if isinstance(value, float | np.floating):
        return "double"
    return "string"


def float_bounds(kind: str) -> tuple[float, float]:
    """The open interval a float must lie in to stand for an integer within an integer
    column's bounds. Where a bound has no float of its own (int64's -2**63 - 1 reads as
    -2**63, and so do the integers beyond it that JSON parsers read as floats), the float at
    the bound may stand for a value beyond it, and is refused."""
    low, high = TYPES[kind].bounds
    below = float(low) if float(low - 1) == float(low) else float(low - 1)
    return below, float(high + 1)


def float_within(kind: str, value: float) -> bool:
    below, above = float_bounds(kind)
    return below < value < above


def type_error(col: Column, value: Any, row: int) -> InputError:
    """The error of a value of the wrong type (or a fraction in an integer column)."""
    try:
        strict_value(col.type, value)
    except ValueError as exc:
        if "whole number" in str(exc):
            return InputError(f"column {col.name!r} in row {row}: {exc} ({col.type} column)")
    shown = json.dumps(value, default=str)
    return InputError(
        f"column {col.name!r} expects {col.type}, got {type(value).__name__} {shown} in row {row}"
    )


def missing_mask(values: np.ndarray) -> np.ndarray:
    """Where ``values`` holds a missing value (None, NaN; NaN only in float arrays)."""
    if values.dtype == object:
        import pandas as pd

        return pd.isna(values)
    if values.dtype.kind == "f":
        return np.isnan(values)
    return np.zeros(len(values), dtype=bool)


def validate(
    frame: pd.DataFrame, contract: Contract, max_rows: int | None = None, first_row: int = 0
) -> pd.DataFrame:
    """The contract's columns of ``frame``, in order, typed as in training; extra columns are
    ignored (as MLflow does). Errors name rows from ``first_row`` (1 for a CSV body's rows, as
    a person counts them; 0 for JSON lists, as their indexes).

    Raises:
        InputError: No rows, more than ``max_rows``, a missing or repeated column, a null in a
            required column, or a value of the wrong type.
    """
    repeated = [c.name for c in contract.columns if list(frame.columns).count(c.name) > 1]
    if repeated:
        raise InputError(f"column {repeated[0]!r} appears more than once")
    present = {c.name: frame[c.name].to_numpy() for c in contract.columns if c.name in frame}
    return validate_columns(present, len(frame), contract, max_rows, first_row)


def validate_columns(
    columns: Mapping[str, Any],
    rows: int,
    contract: Contract,
    max_rows: int | None = None,
    first_row: int = 0,
) -> pd.DataFrame:
    """:func:`validate` for columns given as a mapping of name -> values (a list of JSON
    values, or an array): each column checked as a whole where its values allow (one type,
    vectorised bounds), value by value only to name the first bad one.

    Raises:
        InputError: As :func:`validate`.
    """
    import pandas as pd

    return pd.DataFrame(validated_columns(columns, rows, contract, max_rows, first_row))


def validated_columns(
    columns: Mapping[str, Any],
    rows: int,
    contract: Contract,
    max_rows: int | None = None,
    first_row: int = 0,
) -> dict[str, np.ndarray]:
    """:func:`validate_columns`' validated columns, in the contract's order, before they
    become a frame (a small request may skip the frame: :func:`column_records`).

    Raises:
        InputError: As :func:`validate`.
    """
    if rows == 0:
        raise InputError("no rows: send at least one record")
    if max_rows is not None and rows > max_rows:
        raise InputError(
            f"{rows} rows is more than this service accepts in one request "
            f"({max_rows}, TAGSERVE_MAX_ROWS)"
        )
    absent = [c.name for c in contract.columns if c.required and c.name not in columns]
    if absent:
        raise InputError(f"missing required column(s): {', '.join(map(repr, absent))}")
    out = {}
    for col in contract.columns:
        values = columns.get(col.name)
        if values is None:
            out[col.name] = _all_missing(col, rows)
            continue
        if type(values) is list and _all_known_text(values, col):
            out[col.name] = np.fromiter(values, dtype=object, count=len(values))
            continue
        # A JSON list's value types, read once: by the list's own check, else by the general one.
        kinds = set(map(type, values)) if type(values) is list else None
        typed = _validated_json_list(values, kinds, col, first_row) if kinds is not None else None
        if typed is None:
            typed = _validated_column(_one_dimensional(values), col, first_row, kinds)
        out[col.name] = typed
    return out


def _all_known_text(values: list[Any], col: Column) -> bool:
    """Whether every value is one of the column's categories, all text: its type and its
    domain checked at once (only text equals text)."""
    allowed = col.text_categories
    if allowed is None:
        return False
    try:
        return allowed.issuperset(values)
    except TypeError:  # an unhashable value (a list, an object): the general check names it
        return False


def _validated_json_list(
    values: list[Any], kinds: set[type], col: Column, first_row: int
) -> np.ndarray | None:
    """The usual column of a JSON body, checked straight from its list (``kinds``: its
    values' types): values of one JSON type the column takes (floats and integers in a float
    column), none missing; None for any other (read by :func:`_validated_column`, which names
    a problem)."""
    column = TYPES[col.type]
    positions = np.arange(len(values)) + first_row if first_row else None
    try:
        if column.python is str and kinds == {str}:
            typed = np.fromiter(values, dtype=object, count=len(values))
        elif column.python is bool and kinds == {bool}:
            typed = np.array(values, dtype=bool)
        elif column.number and column.whole and kinds == {int}:
            typed = _validated_integers(np.array(values, dtype=np.int64), col, positions)
        elif column.number and not column.whole and kinds and kinds <= {float, int}:
            numbers = np.array(values, dtype=np.float64)
            if np.isnan(numbers).any():  # NaN is MLflow's missing value
                return None
            typed = _validated_numbers(numbers, values, col, positions)
        else:
            return None
    except OverflowError:  # an integer beyond int64 (or any double): named by the general path
        return None
    check_domain(typed, col, positions)
    return typed


def column_records(columns: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Validated columns (:func:`validated_columns`) as records of Python values, a missing
    value as None: what :func:`records_frame` and the fast path's record entry take."""
    names = list(columns)
    values = [_python_values(array) for array in columns.values()]
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


def _python_values(array: np.ndarray) -> list[Any]:
    values = array.tolist()
    if array.dtype.kind == "f" or array.dtype == object:
        return [None if v is None or (isinstance(v, float) and v != v) else v for v in values]
    return values


def _one_dimensional(values: Any) -> np.ndarray:
    """``values`` as a 1-D array: arrays as they are, JSON lists as objects, value by value (no
    numpy guessing: "1.5" stays text, True a boolean, a list a value of the wrong type)."""
    if isinstance(values, np.ndarray) or hasattr(values, "to_numpy"):  # an array, a Series
        return np.asarray(values)
    return np.fromiter(values, dtype=object, count=len(values))


def _all_missing(col: Column, rows: int) -> np.ndarray:
    if TYPES[col.type].number:
        return np.full(rows, np.nan)
    return np.full(rows, np.nan, dtype=object)


def _validated_column(
    values: np.ndarray, col: Column, first_row: int = 0, kinds: set[type] | None = None
) -> np.ndarray:
    """``values`` (one column of a request) in the column's dtype, or InputError naming the
    column and row (counted from ``first_row``; ``kinds``: the values' types, when read)."""
    # JSON values' types, read once: they tell which values may be missing, and how to type them.
    if kinds is None and values.dtype == object:
        kinds = set(map(type, values))
    numbers = _json_numbers(values, kinds, col)
    if numbers is not None:
        missing = np.isnan(numbers)
    elif kinds is not None and kinds <= NEVER_MISSING:
        missing = np.zeros(len(values), dtype=bool)
    else:
        missing = missing_mask(values)
    any_missing = bool(missing.any())
    if any_missing and col.required:
        rows = (np.flatnonzero(missing)[:5] + first_row).tolist()
        raise InputError(f"column {col.name!r} is required but null in row(s) {rows}")
    where = np.flatnonzero(~missing) if any_missing else None  # the present values' rows
    if where is not None:
        positions = where + first_row
    else:
        positions = np.arange(len(values)) + first_row if first_row else None
    present = values[~missing] if any_missing else values
    if numbers is not None:
        present_numbers = numbers[~missing] if any_missing else numbers
        typed = _validated_numbers(present_numbers, present, col, positions)
    else:
        typed = _typed(present, col, positions, None if any_missing else kinds)
    check_domain(typed, col, positions)
    if where is None:
        return typed
    dtype = dtype_for(col.type, True)
    out = np.full(len(values), np.nan, dtype=dtype)
    out[where] = typed
    return out


def _row(positions: np.ndarray | None, index: int) -> Any:
    """The row a request's error names: the value's position, or its label in ``positions``."""
    if positions is None:
        return index
    row = positions[index]
    return row.item() if hasattr(row, "item") else row


# The types of JSON values no missing value has (NaN is a float, None its own type).
NEVER_MISSING = frozenset({str, int, bool})


def _json_numbers(values: np.ndarray, kinds: set[type] | None, col: Column) -> np.ndarray | None:
    """A float column's JSON numbers (floats and ints, NaN where MLflow wrote one for a missing
    value) as float64, converted once; None for any other column or values (read by
    :func:`_typed`, which names a problem)."""
    column = TYPES[col.type]
    if not kinds or not kinds <= {float, int} or not column.number or column.whole:
        return None
    try:
        return np.array(values.tolist(), dtype=np.float64)
    except OverflowError:  # an integer beyond any double: named by the general path
        return None


def _typed(
    present: np.ndarray, col: Column, positions: np.ndarray | None, kinds: set[type] | None = None
) -> np.ndarray:
    """The present values of a column, checked and in the column's dtype (``kinds``: their
    types, when known)."""
    column = TYPES[col.type]
    kind = present.dtype.kind
    if kind == "O":
        kinds = set(map(type, present)) if kinds is None else kinds
        if column.python is str and kinds <= {str}:
            return present
        if column.python is bool and kinds <= {bool, np.bool_}:
            return present.astype(bool)
        if column.number and all(_is_number_type(k) for k in kinds):
            if column.whole and kinds <= {int}:
                return _validated_integers(_int_array(present, col, positions), col, positions)
            if column.whole:  # ints and floats mixed: each exactly (big ints stay exact)
                return _validated_mixed_integers(present, col, positions)
            numbers = _float_array(present, col, positions)
            return _validated_numbers(numbers, present, col, positions)
        for index, value in enumerate(present):
            try:
                strict_value(col.type, value)
            except ValueError:
                raise type_error(col, value, _row(positions, index)) from None
        raise InputError(f"column {col.name!r}: values of mixed types")  # pragma: no cover
    if kind == "b":
        if column.python is bool:
            return present
    elif kind in "iu":
        if column.number:
            if column.whole:
                return _validated_integers(present, col, positions)
            return _validated_numbers(present.astype(np.float64), present, col, positions)
    elif kind == "f":
        if column.number:
            return _validated_numbers(present.astype(np.float64), present, col, positions)
    elif kind in "US" and column.python is str:
        return present.astype(object)
    raise type_error(
        col, present[0].item() if hasattr(present[0], "item") else present[0], _row(positions, 0)
    )


def _validated_mixed_integers(
    present: np.ndarray, col: Column, positions: np.ndarray | None
) -> np.ndarray:
    """An integer column whose JSON values mix integers and floats, value by value: every
    float must stand for a whole number, every value lie within the bounds."""
    values = []
    for index, value in enumerate(present):
        try:
            values.append(strict_value(col.type, value))
        except ValueError as exc:
            row = _row(positions, index)
            raise InputError(
                f"column {col.name!r} in row {row}: {exc} ({col.type} column)"
            ) from None
    _raise_first_problem(values, col, positions)
    return np.array(values, dtype=TYPES[col.type].dtype)


def _is_number_type(kind: type) -> bool:
    return issubclass(kind, int | float | np.integer | np.floating) and not issubclass(
        kind, bool | np.bool_
    )


def _int_array(present: np.ndarray, col: Column, positions: np.ndarray | None) -> np.ndarray:
    """Python ints as an int64 array, or InputError naming the first beyond int64."""
    try:
        return np.array(present.tolist(), dtype=np.int64)
    except OverflowError:
        _raise_first_problem(present, col, positions)
        raise  # pragma: no cover


def _float_array(present: np.ndarray, col: Column, positions: np.ndarray | None) -> np.ndarray:
    try:
        return np.array(present.tolist(), dtype=np.float64)
    except OverflowError:  # an integer beyond any double
        _raise_first_problem(present, col, positions)
        raise  # pragma: no cover


def _raise_first_problem(values: Any, col: Column, positions: np.ndarray | None) -> None:
    for index, value in enumerate(values):
        problem = value_problem(col.type, value)
        if problem:
            raise InputError(f"column {col.name!r} in row {_row(positions, index)}: {problem}")


def _validated_integers(
    values: np.ndarray, col: Column, positions: np.ndarray | None
) -> np.ndarray:
    """Integers within the column's bounds, in its dtype."""
    low, high = TYPES[col.type].bounds
    unsigned = values.dtype.kind == "u"  # compared as such: no negative bound, no overflow
    bad = values > np.uint64(high) if unsigned else (values < low) | (values > high)
    if bad.any():
        _raise_first_problem(values[bad][:1].tolist(), col, _positions_of(bad, positions))
    return values.astype(TYPES[col.type].dtype)


def _positions_of(bad: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
    where = np.flatnonzero(bad)
    return where if positions is None else positions[where]


def _validated_numbers(
    numbers: np.ndarray, original: np.ndarray, col: Column, positions: np.ndarray | None
) -> np.ndarray:
    """Float64 ``numbers`` (read from ``original``) that are finite, within the column's
    bounds and, in an integer column, whole: in the column's dtype."""
    column = TYPES[col.type]
    low, high = column.bounds
    if column.whole:  # floats standing for integers (float_bounds)
        below, above = float_bounds(col.type)
        ok = np.isfinite(numbers) & (numbers > below) & (numbers < above)
    else:
        ok = np.isfinite(numbers) & (numbers >= low) & (numbers <= high)
    if column.whole:
        fraction = ok & (numbers != np.floor(numbers))
        ok &= ~fraction
    if not ok.all():
        first = int(np.flatnonzero(~ok)[0])
        value = original[first]
        value = value.item() if hasattr(value, "item") else value
        row = _row(positions, first)
        problem = value_problem(col.type, value)
        if problem is None and column.whole:
            problem = f"{_shown(value)} is not a whole number ({col.type} column)"
        raise InputError(f"column {col.name!r} in row {row}: {problem}")
    if column.whole:
        return numbers.astype(column.dtype)
    return numbers.astype(column.dtype, copy=False)


def range_mask(numbers: np.ndarray, bounds: Range) -> np.ndarray:
    """Where ``numbers`` lie within ``bounds`` (vectorised)."""
    ok = np.ones(len(numbers), dtype=bool)
    if bounds.low is not None:
        ok &= numbers > bounds.low if bounds.low_exclusive else numbers >= bounds.low
    if bounds.high is not None:
        ok &= numbers < bounds.high if bounds.high_exclusive else numbers <= bounds.high
    return ok


def domain_mask(frame: pd.DataFrame, contract: Contract) -> np.ndarray:
    """Where the rows of ``frame`` (typed as the model's input) lie within the contract's
    domain (a missing value does): the rows a benchmark or a test may send and get served."""
    ok = np.ones(len(frame), dtype=bool)
    for col in contract.columns:
        if col.name not in frame.columns:
            continue
        values = frame[col.name]
        if col.categories is not None:
            ok &= (values.isin(col.categories) | values.isna()).to_numpy()
        elif col.range is not None:
            numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
            ok &= range_mask(numbers, col.range) | np.isnan(numbers)
    return ok


def check_domain(values: np.ndarray, col: Column, positions: np.ndarray | None) -> None:
    """Raise InputError naming the column, the row (``positions``, as :func:`_row`), the value
    and what the column takes, for the first of ``values`` (typed, none missing) outside the
    column's domain (its closed categories, its bounds); checked as a whole."""
    if not len(values) or (col.categories is None and col.range is None):
        return
    allowed = col.category_set
    if allowed is not None:
        listed = values.tolist()
        if allowed.issuperset(listed):  # the usual body, checked in C
            return
        ok = np.fromiter(map(allowed.__contains__, listed), dtype=bool, count=len(listed))
    else:
        ok = range_mask(values.astype(np.float64, copy=False), col.range)
    if ok.all():
        return
    first = int(np.flatnonzero(~ok)[0])
    value = plain(values[first])
    problem = col.domain_problem(value) or "outside the model's domain"
    raise InputError(f"column {col.name!r} in row {_row(positions, first)}: {problem}")


def check_values(present: pd.Series, col: Column) -> None:
    """Raise InputError naming the column and row (``present``'s index label) of the first
    value of ``present`` (numbers, none missing) that the model cannot take
    (:func:`value_problem`), or a fraction in an integer column; checked as a whole."""
    if TYPES[col.type].bounds is None or present.empty:
        return
    labels = present.index.to_numpy()
    check_labelled(present, col, labels)


def check_labelled(present: pd.Series, col: Column, labels: np.ndarray) -> None:
    """:func:`check_values`, the rows named by ``labels``."""
    if TYPES[col.type].bounds is None or present.empty:
        return
    values = present.to_numpy()
    if values.dtype.kind in "iu" and TYPES[col.type].whole:
        _validated_integers(values, col, labels)
    elif values.dtype.kind in "iuf":
        _validated_numbers(values.astype(np.float64), values, col, labels)
    else:
        _validated_numbers(_float_array(values, col, labels), values, col, labels)


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
    import pandas as pd

    return pd.DataFrame(columns)


# --- the clients: lenient --------------------------------------------------------------------


def coerce(frame: pd.DataFrame, contract: Contract, first_row: int = 1) -> pd.DataFrame:
    """The contract's columns of ``frame`` (rows read from a file), in order, converted to
    their types: numbers read as text become numbers, numbers in a text column text. A
    missing optional column is added as all-missing. Errors name a row by its index label
    (the clients' 0-based row numbers) plus ``first_row``: 1 by default, the first data row of
    a file being row 1 to a person.

    Raises:
        InputError: A required column is missing, or a value cannot be converted or lies
            outside the model's domain (where the contract enforces it).
    """
    missing = [c.name for c in contract.columns if c.required and c.name not in frame.columns]
    if missing:
        raise InputError(f"input lacks model column(s): {', '.join(missing)}")
    import pandas as pd

    out = {}
    for col in contract.columns:
        if col.name not in frame.columns:
            values = np.nan if col.type in NUMBER_TYPES else None
            dtype = dtype_for(col.type, True)
            out[col.name] = pd.Series(values, index=frame.index, dtype=dtype)
        else:
            out[col.name] = _converted(frame[col.name], col, first_row)
    return pd.DataFrame(out, index=frame.index)


def _labels(present: pd.Series, first_row: int) -> np.ndarray:
    labels = present.index.to_numpy()
    return labels + first_row if labels.dtype.kind in "iu" else labels


def _converted(values: pd.Series, col: Column, first_row: int) -> pd.Series:
    if TYPES[col.type].python is str:
        if values.dtype != object:
            # Numbers or categories read where text is expected: text; missing stays missing.
            values = (
                values.astype(object)
                .where(values.notna(), None)
                .map(lambda v: v if v is None or isinstance(v, str) else str(v))
            )
        present = values[values.notna()]
        check_domain(present.to_numpy(), col, _labels(present, first_row))
        return values
    import pandas as pd

    dtype = dtype_for(col.type, bool(values.isna().any()))
    try:
        numbers = pd.to_numeric(values, errors="raise") if col.type in NUMBER_TYPES else values
    except (TypeError, ValueError) as exc:
        bad = _first_bad(values)
        raise InputError(f"column {col.name!r} must hold {col.type} values, got {bad!r}") from exc
    present = numbers[numbers.notna()]
    check_labelled(present, col, _labels(present, first_row))
    check_domain(present.to_numpy(), col, _labels(present, first_row))
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
