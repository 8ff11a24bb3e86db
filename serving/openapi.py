"""The service's OpenAPI document (``GET /docs.json``): every route it answers and every answer
each route gives, built from the model's contract.

BentoML 1.4.39 documents only its own APIs, and not as they answer: its 400 body says
``detail`` is a string (tagserve's is a list, ``serving.middleware.readable_error``), its inline
schemas drop ``null`` from optional fields (``/metadata`` answers ``"bento": null``), and the
routes mounted beside them (``serving.routes.protocol_app``: ``/invocations``, ``GET /metadata``,
``/ping``, ``/health``, ``/version``) are absent. So the service serves this document instead,
as a route of its own (``serving.routes``, matched before BentoML's), and BentoML's generator is
not used at all; a 405 names the methods this document lists for its path
(``serving.middleware.ErrorAnswers``).

The document is OpenAPI 3.1: its schemas are pydantic's JSON Schema (2020-12) as they are, so a
nullable field stays ``anyOf [..., null]``, and a row of ``/invocations`` is a ``prefixItems``
tuple typed column by column.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from inference.contract import TYPES, Column, Contract
from inference.domain import Range, range_csv_pattern
from serving.protocol import CSV, JSON
from serving.routes import (
    API_PAGE,
    DOCUMENT,
    HEALTH,
    HEALTHZ,
    HIDDEN_PREFIX,
    INVOCATIONS,
    LIVEZ,
    METADATA,
    METRICS,
    MONITORING,
    MONITORING_REPORT,
    PING,
    READYZ,
    SHED_PATHS,
    VERSION,
)
from serving.schema import Metadata

OPENAPI_VERSION = "3.1.0"
DOCUMENT_PATH = DOCUMENT
REF = "#/components/schemas/{model}"
SCALAR_TYPES = ["string", "number", "boolean", "null"]
LOCATION = {"description": "where to go: `./`", "required": True, "schema": {"type": "string"}}


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": REF.format(model=name)}


def json_content(schema: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAPI ``content`` of one JSON body of ``schema``."""
    return {JSON: {"schema": dict(schema)}}


def answer(description: str, schema: Mapping[str, Any] | None = None, **extra: Any) -> dict:
    """An OpenAPI response: a JSON body of ``schema`` (none if None)."""
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = json_content(schema)
    return {**out, **extra}


def text_answer(description: str, media_type: str = "text/plain") -> dict[str, Any]:
    """An OpenAPI response with a text body."""
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


# --- shared components --------------------------------------------------------------------


def error_components() -> dict[str, dict[str, Any]]:
    """The error bodies: tagserve's (``serving.middleware.readable_error``, BentoML's 4xx and 5xx)
    and MLflow's (``/invocations``, as ``mlflow models serve`` answers)."""
    return {
        "Error": {
            "type": "object",
            "title": "Error",
            "description": "what went wrong, in one line; for invalid input, each problem in "
            "`detail` (where, what)",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "examples": ["invalid input: carat: Field required"]},
                "detail": {"type": "array", "items": ref("ErrorDetail")},
            },
        },
        "ErrorDetail": {
            "type": "object",
            "title": "ErrorDetail",
            "description": "one validation problem (pydantic's error, without its URL)",
            "required": ["type", "loc", "msg"],
            "properties": {
                "type": {"type": "string", "examples": ["missing"]},
                "loc": {
                    "type": "array",
                    "items": {"type": ["string", "integer"]},
                    "description": "where: a field name, a list position; [] for the body",
                },
                "msg": {"type": "string"},
            },
        },
        "MlflowError": {
            "type": "object",
            "title": "MlflowError",
            "description": "an error of the MLflow scoring protocol",
            "required": ["error_code", "message"],
            "properties": {
                "error_code": {"type": "string", "enum": ["BAD_REQUEST", "INTERNAL_ERROR"]},
                "message": {"type": "string"},
            },
        },
    }


def error_answers(error: str, *, overload: dict[str, Any] | None = None) -> dict[str, Any]:
    """The error answers of a POST route whose error body is the component ``error``; a 503
    ``overload`` answer where the route sheds load."""
    body = ref(error)
    out = {
        "400": answer("invalid input: the body, a field or a value (named in the answer)", body),
        "408": answer(
            "the body did not arrive within TAGSERVE_REQUEST_READ_SECONDS (the connection is "
            "closed)",
            body,
        ),
        "413": answer("the body is larger than the service accepts", body),
        "415": answer("a content type the route does not take", body),
        "500": answer("the model failed (a server fault; see the server log)", body),
    }
    if overload:
        out["503"] = overload
    return out


def shed_answer(body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load shedding (``serving.admission``): refused at once, to be retried."""
    return answer(
        "overloaded: too many requests in flight (or still sending their body) in this "
        "worker; retry after `Retry-After` seconds",
        body or ref("Error"),
        headers={
            "Retry-After": {
                "description": "seconds to wait before retrying",
                "required": True,
                "schema": {"type": "integer", "minimum": 0},
            }
        },
    )


def batcher_overload_answer() -> dict[str, Any]:
    """A batchable API's 503: load shedding, or BentoML's batcher shedding what it cannot
    answer in time."""
    return answer(
        "overloaded: too many requests in flight in this worker, or the adaptive batcher "
        "cannot answer within TAGSERVE_MAX_LATENCY_MS; retry after `Retry-After` seconds",
        ref("Error"),
    )


# --- pydantic schemas as components -------------------------------------------------------


def hoisted(schema: Mapping[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (pydantic's, refs made with :data:`REF`) with its ``$defs`` moved into
    ``components``, and BentoML's own marker (``root_input``) dropped."""
    schema = copy.deepcopy(dict(schema))
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    schema.pop("root_input", None)
    return schema


def model_schema(model: type[BaseModel], name: str, components: dict[str, Any]) -> dict:
    """A ref to ``model``'s serialization schema, registered as the component ``name``."""
    schema = model.model_json_schema(ref_template=REF, mode="serialization")
    components[name] = {**hoisted(schema, components), "title": name}
    return ref(name)


def api_body(spec: type[BaseModel], components: dict[str, Any], *, mode: str) -> dict:
    """The JSON schema of a BentoML API's input or output spec; an IO descriptor of one of
    the service's own models (``RecordIODescriptor``) becomes a ref to that model."""
    schema = hoisted(spec.model_json_schema(ref_template=REF, mode=mode), components)
    title = str(schema.get("title", ""))
    name = title.removesuffix("IODescriptor")
    if name in components:
        return ref(name)
    return schema


# --- BentoML's APIs ---------------------------------------------------------------------


def bentoml_operations(
    name: str,
    apis: Mapping[str, Any],
    components: dict[str, Any],
    overloads: Mapping[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """``POST`` of each BentoML API (``@bentoml.api``, by attribute name) of the service
    ``name``, its request and answers from the API's own input and output types."""
    paths: dict[str, dict[str, Any]] = {}
    for api_name, api in apis.items():
        if api.route.startswith(HIDDEN_PREFIX):  # the canary's and shadow's own batchers
            continue
        request = api_body(api.input_spec, components, mode="validation")
        has_fields = bool(request.get("properties")) or "$ref" in request or "items" in request
        operation = {
            "operationId": f"{name}__{api_name}",
            "x-bentoml-name": api_name,
            "tags": ["Service APIs"],
            "description": " ".join((api.doc or "").split()),
            "requestBody": {"required": has_fields, "content": json_content(request)},
            "responses": {
                "200": answer(
                    f"{api_name}: its answer",
                    api_body(api.output_spec, components, mode="serialization"),
                ),
                **error_answers("Error", overload=overloads.get(api.route)),
            },
        }
        paths[api.route] = {"post": operation}
    return paths


# --- MLflow's scoring protocol (/invocations) ---------------------------------------------


def column_schemas(contract: Contract, record: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """Each signature column's JSON schema (type, nullability, bounds), as the record model
    has it: the same value rules as ``/predict``."""
    properties = record.model_json_schema(by_alias=True, ref_template=REF)["properties"]
    out = {}
    for column in contract.columns:
        schema = dict(properties[column.name])
        schema.pop("title", None)
        schema.pop("default", None)
        out[column.name] = schema
    return out


def record_object(contract: Contract, columns: Mapping[str, Any], extra: Any) -> dict:
    """One row as a JSON object: its columns typed, the required ones present, other keys
    allowed as ``extra`` says (MLflow ignores columns the model does not take)."""
    required = [c.name for c in contract.columns if c.required]
    return {
        "type": "object",
        "properties": dict(columns),
        **({"required": required} if required else {}),
        "additionalProperties": extra,
    }


def row_tuple(contract: Contract, columns: Mapping[str, Any]) -> dict[str, Any]:
    """One row as a JSON list: a value per signature column, in the signature's order."""
    n = len(contract.columns)
    return {
        "type": "array",
        "prefixItems": [columns[c.name] for c in contract.columns],
        "minItems": n,
        "maxItems": n,
    }


def rows_of(item: Mapping[str, Any], max_rows: int) -> dict[str, Any]:
    """A JSON list of 1 to ``max_rows`` rows, each an ``item``."""
    return {"type": "array", "items": dict(item), "minItems": 1, "maxItems": max_rows}


# The words pandas reads as missing in a CSV field.
PANDAS_NA_WORDS = (
    "#N/A N/A", "#N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip


def literal(text: str) -> str:
    """``text`` as a regular expression matching itself, in the syntax Python, ECMA-262 and
    Rust's regex share (``re.escape`` also escapes ``#`` and spaces, which ECMA refuses)."""
    return "".join("\\" + c if c in r"\.^$*+?()[]{}|" else c for c in text)


_NOT_MISSING = "(?!(" + "|".join(literal(w) for w in PANDAS_NA_WORDS) + ")(,|\n|$))"


def csv_value(kind: str) -> str:
    """One CSV value of an MLflow type (``inference.contract.TYPES``' ``csv_value``); a text
    value must not be a word pandas reads as missing."""
    column = TYPES[kind]
    return _NOT_MISSING + column.csv_value if column.python is str else column.csv_value


def csv_domain_value(column: Column) -> str | None:
    """One CSV value of a column with a domain, or None (none: its type's pattern): a closed
    column's categories; a bounded number column's numbers within its bounds
    (``inference.domain.range_csv_pattern``), else a sample of them."""
    if column.categories is not None:
        fields = [csv_header_field(str(c)) for c in column.categories]
        plain = [f for f in fields if f not in PANDAS_NA_WORDS and f.strip() == f and f]
        return "|".join(literal(f) for f in plain) or None
    if column.range is not None:
        whole = TYPES[column.type].whole
        pattern = range_csv_pattern(column.range, whole)
        return pattern or "|".join(literal(v) for v in range_samples(column.range, whole))
    return None


def range_samples(bounds: Range, whole: bool) -> list[str]:
    """Five values spread over ``bounds`` (an open side: 100 past the other), in plain decimal
    notation; whole numbers for an integer column."""
    low = bounds.low if bounds.low is not None else bounds.high - 100
    high = bounds.high if bounds.high is not None else low + 100
    out: list[str] = []
    for step in range(5):
        value = low + (high - low) * step / 4
        if whole:
            value = float(math.ceil(value) if step < 2 else math.floor(value))
        text = f"{value:.6f}".rstrip("0").rstrip(".")
        if text in ("-0", ""):
            text = "0"
        if bounds.contains(float(text)) and text not in out:
            out.append(text)
    return out


def csv_header_field(name: str) -> str:
    """``name`` as a CSV header field (quoted if it holds a comma, a quote or a newline)."""
    if any(c in name for c in ',"\n\r'):
        return '"' + name.replace('"', '""') + '"'
    return name


def csv_pattern(contract: Contract, max_rows: int) -> str:
    """A regular expression of the CSV bodies ``/invocations`` takes in their plain form: the
    header line (the signature's columns, in order), then 1 to ``max_rows`` rows of values.
    An optional column's value may be empty (missing)."""
    values = []
    for column in contract.columns:
        value = f"({csv_domain_value(column) or csv_value(column.type)})"
        values.append(f"{value}?" if not column.required else value)
    header = ",".join(literal(csv_header_field(c.name)) for c in contract.columns)
    row = ",".join(values)
    # Rows as `+`, not `{1,max_rows}`: a validator unrolls a counted repetition, and with
    # dozens of columns the pattern outgrows what JSON Schema validators compile (the Rust
    # regex crate's size limit: schemathesis then dropped the pattern). The row limit is in
    # the description, and the service answers 400 past it.
    return f"^{header}(\n{row})+\n?$"


INVOCATION_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def invocation_body(key: str, value: Mapping[str, Any], description: str) -> dict:
    """A JSON body with ``key`` holding ``value`` and none of the protocol's other keys."""
    others = {k: False for k in INVOCATION_KEYS if k != key}
    return {
        "type": "object",
        "title": key,
        "description": description,
        "required": [key],
        "properties": {key: dict(value), **others},
    }


def invocations_request(contract: Contract, record: type[BaseModel], max_rows: int) -> dict:
    """``/invocations``' body: one of MLflow's four JSON forms, or CSV.

    The forms whose validity JSON Schema cannot state are described, not specified: columns
    named in another order (``dataframe_split.columns``) and ``instances``/``inputs`` as
    columns (``{"name": [values]}``), which MLflow also takes.
    """
    columns = column_schemas(contract, record)
    names = contract.features
    record_schema = record_object(contract, columns, True)
    single = record_object(contract, columns, {"type": SCALAR_TYPES})
    rows = rows_of(row_tuple(contract, columns), max_rows)
    split = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "columns": {
                "anyOf": [{"const": names}, {"type": "null"}],
                "description": "the signature's columns, in order (omitted or null: the same)",
            },
            "data": rows,
        },
    }
    instances = {
        "anyOf": [rows_of(record_schema, max_rows), rows, single],
        "description": "records, rows (a value per column in the signature's order), or one "
        "record; also columns ({name: [values]}, of equal lengths)",
    }
    forms = [
        invocation_body(
            "dataframe_split",
            split,
            "pandas' split orient: rows of values in the signature's order (another order "
            "is taken too when `columns` names it)",
        ),
        invocation_body(
            "dataframe_records", rows_of(record_schema, max_rows), "pandas' records orient"
        ),
        invocation_body("instances", instances, "TF-serving's row format"),
        invocation_body("inputs", instances, "TF-serving's column format, or rows"),
    ]
    return {
        "required": True,
        "content": {
            JSON: {"schema": {"oneOf": forms}},
            CSV: {
                "schema": {
                    "type": "string",
                    "pattern": csv_pattern(contract, max_rows),
                    "description": f"a header line naming the columns ({', '.join(names)}), "
                    f"then one line per row, 1 to {max_rows} rows (TAGSERVE_MAX_ROWS; UTF-8); "
                    "the pattern is the plain form: unquoted values, numbers in decimal "
                    "notation; also taken: columns in another order, extra columns (ignored), "
                    "a byte order mark, CRLF line ends, quoted fields",
                }
            },
        },
    }


def invocations_operation(
    contract: Contract, record: type[BaseModel], prediction: type[BaseModel], max_rows: int
) -> dict[str, Any]:
    """``POST /invocations``: MLflow's request forms, a prediction per row, MLflow's errors."""
    predicted = dict(prediction.model_json_schema(ref_template=REF)["properties"]["prediction"])
    predicted.pop("title", None)
    return {
        "operationId": "mlflow__invocations",
        "tags": ["MLflow scoring protocol"],
        "description": "The scoring protocol of `mlflow models serve`: its clients work "
        "unchanged. One DataFrame, no per-record validation: the fastest way to score many "
        f"rows (at most {max_rows}, TAGSERVE_MAX_ROWS).",
        "requestBody": invocations_request(contract, record, max_rows),
        "responses": {
            "200": answer(
                "a prediction per row, in order",
                {
                    "type": "object",
                    "required": ["predictions"],
                    "properties": {"predictions": {"type": "array", "items": predicted}},
                },
            ),
            **error_answers("MlflowError", overload=shed_answer(ref("MlflowError"))),
        },
    }


# --- the other mounted routes and BentoML's infrastructure ---------------------------------


def get(description: str, responses: dict[str, Any], tag: str = "Infrastructure") -> dict:
    """A path item with one GET operation (no parameters)."""
    return {"get": {"tags": [tag], "description": description, "responses": responses}}


def mounted_operations(metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``serving.routes.protocol_app``'s routes other than ``/invocations``."""
    ping = {
        "200": {"description": "the model is loaded", "content": {JSON: {}}},
        "503": {"description": "the model is not loaded yet", "content": {JSON: {}}},
    }
    return {
        METADATA: get(
            "The model and the code this service runs (as POST /metadata).",
            {"200": answer("what this service runs", metadata)},
            tag="Service APIs",
        ),
        **monitoring_operations(),
        PING: get("MLflow's health check: 200 once the model is loaded (body: a newline).", ping),
        HEALTH: get("As /ping.", ping),
        VERSION: get(
            "The MLflow version, as `mlflow models serve` answers it.",
            {"200": text_answer("the MLflow version, e.g. 3.17.2")},
        ),
        API_PAGE: get(
            "Leads to the API page (Swagger UI over this document), served at `/`.",
            {"307": {"description": "to the API page", "headers": {"Location": LOCATION}}},
        ),
    }


def monitoring_operations() -> dict[str, dict[str, Any]]:
    """``GET /monitoring`` and ``/monitoring/report`` (``serving.monitoring``)."""
    status = {
        "type": "object",
        "title": "MonitoringStatus",
        "required": ["enabled"],
        "description": "the last drift and data-quality test of the traffic: per feature "
        "`statistic`, `p_value`, `detected`, `missing_ratio`, `unknown_category_ratio` or "
        "`out_of_range_ratio`; `prediction` (the live model's answers); "
        "`candidate_prediction` (a canary's answers, tested apart); `drifted`; `window`; "
        "`reference`; "
        "`evaluated_at`. Unmonitored: `enabled` false and the `reason`.",
        "properties": {
            "enabled": {"type": "boolean"},
            "reason": {"type": "string"},
            "evaluated_at": {"type": ["string", "null"]},
            "window": {"type": "object"},
            "features": {"type": "object"},
            "drifted": {"type": "array", "items": {"type": "string"}},
            "candidate": {
                "type": "object",
                "description": "with a candidate (TAGSERVE_CANDIDATE): its shadow comparison "
                "with the live model over every worker, the same in each (rows, "
                "|candidate - live| or agreement, calls offered, scored, dropped)",
            },
        },
    }
    return {
        MONITORING: get(
            "Drift and data quality of the served traffic against the model's reference "
            "(check_data's tests), as last evaluated; the same in every worker.",
            {"200": answer("the monitoring status", status)},
            tag="Service APIs",
        ),
        MONITORING_REPORT: get(
            "The same as an HTML page: reference against live distribution per feature and "
            "for the prediction (inline SVG, no script), drifted first.",
            {"200": text_answer("the report page", "text/html")},
            tag="Service APIs",
        ),
    }


def infrastructure_operations() -> dict[str, dict[str, Any]]:
    """BentoML's own routes, as they answer in this service (no readiness hooks, no
    dependencies: a worker that answers is live and ready)."""
    alive = {"200": text_answer("yes (body: a newline)")}
    return {
        LIVEZ: get("Liveness (Kubernetes).", alive),
        HEALTHZ: get("Liveness; deprecated, as /livez.", alive),
        READYZ: get(
            "Readiness (Kubernetes): ready to take traffic; 503 once the service drains "
            "(SIGTERM, serving.drain).",
            {
                **alive,
                "503": answer(
                    "draining: send no more requests here",
                    {"type": "object", "properties": {"status": {"const": "draining"}}},
                ),
            },
        ),
        METRICS: get(
            "Prometheus metrics (text exposition format).",
            {"200": text_answer("the metrics")},
        ),
    }


# --- the document -------------------------------------------------------------------------


def service_document(
    name: str,
    apis: Mapping[str, Any],
    contract: Contract,
    record: type[BaseModel],
    prediction: type[BaseModel],
    *,
    max_rows: int,
    version: str,
    shed_paths: Iterable[str] = SHED_PATHS,
) -> dict[str, Any]:
    """The OpenAPI document of the BentoML service ``name`` with the APIs ``apis`` (by
    attribute name) serving a model of
    ``contract`` (``record``: one input row; ``prediction``: one answer); ``version``: the
    document's version (the model tag: the schema changes with the model)."""
    from serving.v2_openapi import v2_paths  # it builds on this module's parts

    components: dict[str, Any] = error_components()
    model_schema(record, "Record", components)
    model_schema(prediction, "Prediction", components)
    metadata = model_schema(Metadata, "Metadata", components)
    overloads = {
        api.route: batcher_overload_answer()
        for api in apis.values()
        if api.batchable and not api.route.startswith(HIDDEN_PREFIX)
    }
    # A batchable API's 503 is described by the batcher's answer, which names its budget.
    overloads.update({path: shed_answer() for path in shed_paths if path not in overloads})
    paths = bentoml_operations(name, apis, components, overloads)
    others = {
        INVOCATIONS: {"post": invocations_operation(contract, record, prediction, max_rows)},
        **mounted_operations(metadata),
        **infrastructure_operations(),
        **v2_paths(contract, record, version, max_rows),
    }
    for path, operations in others.items():  # GET /metadata beside BentoML's POST
        paths[path] = {**paths.get(path, {}), **operations}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": name,
            "version": version,
            "description": f"The model {version} (artifact "
            f"{contract.metadata.get('artifact') or 'unknown'}) behind typed, validated APIs: "
            "its MLflow signature is the record schema.",
        },
        "servers": [{"url": "."}],
        "tags": [
            {"name": "Service APIs", "description": "tagserve's APIs"},
            {"name": "MLflow scoring protocol", "description": "as `mlflow models serve`"},
            {"name": "Infrastructure", "description": "health and metrics"},
            {"name": "Open Inference Protocol (KServe V2)", "description": "V2 REST"},
        ],
        "paths": paths,
        "components": {"schemas": components},
    }


def allowed_methods(document: Mapping[str, Any]) -> dict[str, str]:
    """Each documented path's ``Allow`` header: its documented methods, and HEAD with GET (as
    Starlette answers HEAD for a GET route)."""
    out = {}
    for path, operations in document["paths"].items():
        methods = [m.upper() for m in operations]
        if "GET" in methods:
            methods.append("HEAD")
        out[path] = ", ".join(sorted(methods))
    return out
