"""The service's typed API schema, generated from the model's contract: a pydantic model of
one record (a field per signature column), of one prediction, and of ``/metadata``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError

from inference.contract import TYPES, Column, Contract, float_within, strict_value, value_problem
from serving.bentoml_private import IORootModel, JSONSerde

RECORD_CONFIG = ConfigDict(
    extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True, title="Record"
)


def _no_null(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("null_not_allowed", "is required and must not be null")
    return value


def _value_check(kind: str) -> AfterValidator:
    """The contract's value rule (:func:`inference.contract.value_problem`) for a column of
    MLflow type ``kind``: a value the model cannot take is a validation error of its field."""

    low, high = TYPES[kind].bounds or (None, None)

    def check(value: Any) -> Any:
        # On every field of every record: compare first (strict pydantic already refused
        # inf and NaN), word the problem only for a value out of bounds.
        if low <= value <= high:
            return value
        raise PydanticCustomError("value_out_of_range", value_problem(kind, value) or "invalid")

    return AfterValidator(check)


def _whole_number(kind: str) -> BeforeValidator:
    """An integer column's rule (:func:`inference.contract.strict_value`): a JSON number with
    no fractional part is the integer it spells (JSON Schema's "integer" counts 3504.0, and
    pandas writes an integer column holding a missing value as floats); 3.5 is refused. Any
    other value goes on to pydantic's strict integer check, which names it."""

    def whole(value: Any) -> Any:
        if isinstance(value, float):
            if math.isfinite(value) and not float_within(kind, value):
                raise PydanticCustomError(
                    "value_out_of_range", value_problem(kind, value) or _beyond(kind, value)
                )
            try:
                return strict_value(kind, value)
            except ValueError:
                raise PydanticCustomError(
                    "whole_number", "Input should be a whole number, got {value}", {"value": value}
                ) from None
        return value

    return BeforeValidator(whole)


def _domain_check(col: Column) -> AfterValidator:
    """The model's domain (``Column.domain_problem``): a category outside its closed set, a
    number outside its bounds, is a validation error of its field naming what it takes."""

    def check(value: Any) -> Any:
        problem = col.domain_problem(value)
        if problem is None:
            return value
        raise PydanticCustomError("outside_domain", "{problem}", {"problem": problem})

    return AfterValidator(check)


def _beyond(kind: str, value: float) -> str:
    low, high = TYPES[kind].bounds
    return f"{value:.8g} is outside the range the model takes for a {kind} column ({low} to {high})"


def _bounds_schema(col: Column) -> dict[str, Any] | None:
    """The column's bounds as JSON-schema ``minimum``/``maximum``, the tighter of its type's
    and its domain's (``exclusiveMinimum``...), and a closed column's ``enum`` (null among
    them when the column may be null): shown in the OpenAPI page, generated from by
    schemathesis."""
    bounds = TYPES[col.type].bounds
    schema: dict[str, Any] = {"minimum": bounds[0], "maximum": bounds[1]} if bounds else {}
    domain = col.schema()
    if "enum" in domain and not col.required:
        domain["enum"] = [*domain["enum"], None]
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        side = "minimum" if key == "exclusiveMinimum" else "maximum"
        if key in domain:
            schema.pop(side, None)
    if "minimum" in domain and "minimum" in schema:
        domain["minimum"] = max(domain["minimum"], schema["minimum"])
    if "maximum" in domain and "maximum" in schema:
        domain["maximum"] = min(domain["maximum"], schema["maximum"])
    return {**schema, **domain} or None


def _field_name(column: str, taken: set[str]) -> str:
    """A Python identifier for ``column`` (which stays the JSON name through an alias)."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in column) or "column"
    if name[0].isdigit() or name.startswith(("model_", "_")) or hasattr(BaseModel, name):
        name = f"f_{name}"
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def build_record_model(contract: Contract) -> type[BaseModel]:
    """A pydantic model of one input row: a field per signature column, typed and strict
    (no "1.5" for a number, no 1 for a string), optional (None) where MLflow says
    ``required: false``, holding only values the model can take (finite, within the type's
    bounds); unknown fields are refused."""
    fields: dict[str, Any] = {}
    taken: set[str] = set()
    for col in contract.columns:
        column = TYPES[col.type]
        python_type = column.python
        if column.bounds:
            python_type = Annotated[python_type, _value_check(col.type)]
        if col.categories is not None or col.range is not None:
            python_type = Annotated[python_type, _domain_check(col)]
        if column.whole:
            python_type = Annotated[python_type, _whole_number(col.type)]
        name = _field_name(col.name, taken)
        description = f"{col.type} (MLflow)"
        extra = _bounds_schema(col)
        if col.required:
            annotation = Annotated[python_type, BeforeValidator(_no_null)]
            field = Field(
                alias=col.name, description=f"{description}, required", json_schema_extra=extra
            )
        else:
            annotation = python_type | None
            field = Field(
                None,
                alias=col.name,
                description=f"{description}, may be null",
                json_schema_extra=extra,
            )
        fields[name] = (annotation, field)
    return create_model(
        "Record", __config__=RECORD_CONFIG, __base__=None, __module__=__name__, **fields
    )


def _label_type(classes: Sequence[Any] | None) -> Any:
    kinds = {type(c) for c in classes or []}
    if len(kinds) == 1:
        return kinds.pop()
    return str | int | float | bool


def build_prediction_model(contract: Contract) -> type[BaseModel]:
    if contract.task == "classification":
        return create_model(
            "Prediction",
            __module__=__name__,
            prediction=(_label_type(contract.classes), Field(description="the predicted class")),
            probabilities=(
                dict[str, float] | None,
                Field(
                    None,
                    description="probability of each class (keys: the classes as text); "
                    "null if the model cannot tell",
                ),
            ),
        )
    return create_model(
        "Prediction",
        __module__=__name__,
        prediction=(float, Field(description="the predicted value")),
    )


def build_records_input(
    records: Any, contract: Contract, max_rows: int | None = None
) -> type[IORootModel]:
    """``predict_batch``'s body: a JSON list of records (a BentoML root input) of ``records``
    (the bounded list of record models: the API's schema), read as the request's checked
    input frame, handed to the API as :class:`serving.batching.CheckedRows`, which BentoML's
    adaptive batcher merges with other requests' (``predict_merged``).

    A JSON body is read by :func:`serving.protocol.parse_records` (msgspec, then the
    contract's checks a column at a time, as ``/invocations`` checks its body): building and
    checking a pydantic model per record cost several times the model's own call on large
    bodies. A body it does not take as it is, and every other media type, is read by the
    record model, whose errors name the field and row of each problem.

    BentoML 1.4 parses a root input with ``json.loads``, so malformed or too deeply nested
    JSON would end as a 500: here it is a validation error like any other (400).
    """
    from inference.contract import records_frame
    from serving.batching import CheckedRows
    from serving.protocol import parse_records

    class RecordsInput(IORootModel[records]):
        @classmethod
        async def from_http_request(cls, request: Any, serde: Any) -> Any:
            if type(serde) is JSONSerde:
                body = await request.body()
                frame = parse_records(body, contract, max_rows)
                if frame is None:  # the record model's errors name the field and row
                    parsed = cls.model_validate_json(body or b"{}")
            else:  # multipart, pickle...: BentoML reads them
                parsed = await super().from_http_request(request, serde)
                frame = None
            if frame is None:
                dumped = [r.model_dump(by_alias=True) for r in parsed.root]
                frame = records_frame(dumped, contract)
            return CheckedRows.of(frame)

        @classmethod
        def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Any:
            try:
                parsed = json.loads(json_data)
            except (ValueError, RecursionError) as exc:
                # json.loads raises RecursionError on deep nesting (e.g. 20,000 "[")
                error = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                raise ValidationError.from_exception_data(
                    cls.__name__,
                    [{"type": "json_invalid", "loc": (), "input": "", "ctx": {"error": error}}],
                ) from None
            return cls.model_validate(parsed, **kwargs)

    RecordsInput.__root_input__ = True
    return RecordsInput


class Metadata(BaseModel):
    """What this service serves, and where it came from."""

    model: str = Field(description="BentoML model tag")
    artifact: str | None = Field(None, description="the pipeline artifact, e.g. model_export:v3")
    source_ref: str | None = None
    version: str | None = Field(None, description="the artifact version")
    digest: str | None = Field(None, description="sha256 of the MLflow model files")
    task: str
    target: str | None = None
    # Lists and objects are never null here: BentoML's client cannot decode a null array.
    classes: list[Any] = Field(default_factory=list, description="a classifier's classes")
    feature_columns: list[str]
    signature: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict, description="val and test metrics")
    bento: str | None = Field(None, description="the bento being served, if any")
    git_tag: str = Field("", description="release tag of the service code (empty: none)")
    git_commit: str = Field("", description="commit of the service code (empty: unknown)")
    model_git_commit: str | None = Field(None, description="commit that trained the model")
    run_id: str | None = None
    engine: str = Field(
        "sklearn",
        description="what computes the predictions: the exact fast path (numpy preprocessing "
        "and a compiled forest, numpy+numba-forest) or sklearn",
    )
    fast_path: dict[str, Any] = Field(
        default_factory=dict,
        description="the fast path's checks against sklearn, bit for bit: at import "
        "(engine, exact, rows_checked, checked_on, reason if not used) and at start-up",
    )
    limits: dict[str, int] = Field(default_factory=dict)
    domain: dict[str, Any] = Field(
        default_factory=dict,
        description="the model's domain, recorded at import: per column, the closed set of "
        "categories it was trained on (categories), or the bounds the pipeline's rules "
        "enforce on its training data (minimum, maximum, exclusiveMinimum...); values outside "
        "it are refused (400) unless accepted (TAGSERVE_UNKNOWN_CATEGORIES, "
        "TAGSERVE_OUT_OF_RANGE: see enforced)",
    )
    batching: dict[str, int] = Field(
        default_factory=dict,
        description="this worker's predict_batch so far: model calls and rows (rows per call "
        "above 1: the adaptive batcher merges requests)",
    )
    candidate: dict[str, Any] | None = Field(
        None,
        description="the candidate model beside the live one (TAGSERVE_CANDIDATE): tag, "
        "lineage, fast path, canary_percent, shadow_fraction; null when there is none",
    )
