"""tagserve's BentoML service: the imported prod model behind typed, validated HTTP APIs.

- ``POST /predict``: one record (its fields and types come from the model's MLflow signature)
  -> the prediction, and the class probabilities for a classifier. No batching.
- ``POST /predict_batch``: a list of records -> a list of predictions, in order. Adaptive
  batching merges concurrent requests into one model call.
- ``POST /invocations``: the MLflow scoring protocol (JSON ``dataframe_split``,
  ``dataframe_records``, ``instances``, ``inputs``; CSV), answers ``{"predictions": [...]}``:
  clients of ``mlflow models serve`` work unchanged.
- ``GET|POST /metadata``: model tag, artifact, version, digest, git tag and commit, signature,
  metrics. ``/livez``, ``/readyz``, ``/healthz``, ``/metrics`` as BentoML provides them, and
  MLflow's ``GET /ping``, ``/health``, ``/version``.

Configuration (environment; read when the service is imported, that is in every worker):

- ``TAGSERVE_MODEL``: the BentoML model tag (default ``tagserve-diamonds:latest``). The bento
  argument ``model`` (``bentoml serve/build --arg model=TAG``) takes precedence; the tag
  resolved here is recorded as that argument, so a bento built from this file serves exactly
  the model it was built with, even after a newer model is imported.
- ``TAGSERVE_MAX_ROWS`` (10000): most rows one request may carry.
- ``TAGSERVE_MAX_BATCH_SIZE`` (see ``MAX_BATCH_SIZE``) and ``TAGSERVE_MAX_LATENCY_MS``:
  ``predict_batch``'s adaptive batching.
- ``TAGSERVE_WORKERS`` (1): worker processes.

The file is self-contained (BentoML, MLflow, scikit-learn, pandas, pydantic): a bento needs
nothing else from the project.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
import pandas as pd
from _bentoml_sdk.io_models import IORootModel  # BentoML 1.4's root-input model
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model
from pydantic_core import PydanticCustomError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

logger = logging.getLogger("bentoml.service.tagserve")

DEFAULT_MODEL = "tagserve-diamonds:latest"
MLFLOW_FOLDER = "mlflow_model"  # where bentoml.mlflow.import_model puts the MLflow files


def _env_int(name: str, default: int, least: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {raw!r}") from None
    if value < least:
        raise ValueError(f"{name} must be at least {least}, not {value}")
    return value


MAX_ROWS = _env_int("TAGSERVE_MAX_ROWS", 10_000)
# Measured on 2 cores with 32 concurrent single-row clients (see README, "Serving"): the
# model costs ~3 ms per call whatever the rows, so batches are cheap to grow; the latency
# budget must cover several model calls plus queueing or the batcher sheds load (503).
MAX_BATCH_SIZE = _env_int("TAGSERVE_MAX_BATCH_SIZE", 256, least=2)
MAX_LATENCY_MS = _env_int("TAGSERVE_MAX_LATENCY_MS", 2_000)
WORKERS = _env_int("TAGSERVE_WORKERS", 1)


# --- which model, which code --------------------------------------------------------------


def _arguments() -> dict[str, Any]:
    return dict(vars(bentoml.use_arguments()))


def _record_arguments(values: Mapping[str, Any]) -> None:
    """Add ``values`` to the bento arguments where they are not set yet.

    ``bentoml build`` stores the arguments in bento.yaml and ``bentoml serve`` passes them to
    every worker (BentoML 1.4's ``set_arguments``; the arguments given on the command line
    win).
    """
    from bentoml._internal.utils.args import set_arguments

    set_arguments({k: v for k, v in values.items() if v is not None}, override=False)


def _git(*args: str) -> str:
    here = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _source_revision(args: Mapping[str, Any]) -> dict[str, str]:
    """The git commit and release tag of this code: from the bento arguments (a built bento
    carries them), else from the checkout this file lives in, else unknown ("")."""
    if "git_commit" in args:
        return {"git_commit": str(args["git_commit"]), "git_tag": str(args.get("git_tag", ""))}
    if _git("rev-parse", "--show-toplevel") != str(Path(__file__).resolve().parent):
        return {"git_commit": "", "git_tag": ""}  # not the root of a checkout: a bento
    commit = _git("rev-parse", "HEAD")
    tags = _git("tag", "--points-at", "HEAD").split()
    return {"git_commit": commit, "git_tag": " ".join(sorted(tags))}


def _resolve_model(args: Mapping[str, Any]) -> bentoml.Model:
    wanted = str(args.get("model") or os.environ.get("TAGSERVE_MODEL") or DEFAULT_MODEL)
    try:
        return bentoml.models.get(wanted)
    except bentoml.exceptions.NotFound:
        raise bentoml.exceptions.NotFound(
            f"model {wanted} is not in the BentoML model store: import it with "
            "`python -m importers` (or set TAGSERVE_MODEL to an imported model)"
        ) from None


# --- the model's interface, from its MLflow signature ----------------------------------------


def _read_interface(model: bentoml.Model) -> dict[str, Any]:
    """Signature, task, classes, feature columns, metrics... from the importer's metadata,
    completed from the MLflow files (MLmodel) for models imported by other means."""
    meta = dict(model.info.metadata)
    folder = Path(model.path_of(MLFLOW_FOLDER))
    if "signature" not in meta or "task" not in meta:
        import yaml

        mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
        raw = mlmodel.get("signature") or {}
        meta.setdefault(
            "signature",
            {
                key: json.loads(raw[key]) if isinstance(raw.get(key), str) else raw.get(key)
                for key in ("inputs", "outputs")
            },
        )
        for key, value in (mlmodel.get("metadata") or {}).items():
            meta.setdefault(key, value)
    inputs = (meta.get("signature") or {}).get("inputs") or []
    if not inputs or any("name" not in col or col.get("type") not in TYPES for col in inputs):
        raise bentoml.exceptions.BentoMLException(
            f"model {model.tag} has no column-based MLflow signature (named columns of types "
            f"{', '.join(TYPES)}): tagserve cannot build its input schema"
        )
    meta["inputs"] = inputs
    meta.setdefault("task", "regression")
    return meta


def _no_null(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("null_not_allowed", "is required and must not be null")
    return value


# MLflow column type -> (Python type, pandas dtype when no value is missing)
TYPES: dict[str, tuple[type, Any]] = {
    "double": (float, "float64"),
    "float": (float, "float32"),
    "long": (int, "int64"),
    "integer": (int, "int32"),
    "string": (str, object),
    "boolean": (bool, bool),
}
RECORD_CONFIG = ConfigDict(
    extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True, title="Record"
)


def _field_name(column: str, taken: set[str]) -> str:
    """A Python identifier for ``column`` (which stays the JSON name through an alias)."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in column) or "column"
    if name[0].isdigit() or name.startswith(("model_", "_")) or hasattr(BaseModel, name):
        name = f"f_{name}"
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def build_record_model(inputs: Sequence[Mapping[str, Any]]) -> type[BaseModel]:
    """A pydantic model of one input row: a field per signature column, typed and strict
    (no "1.5" for a number, no 1 for a string), optional (None) where MLflow says
    ``required: false``; unknown fields are refused."""
    fields: dict[str, Any] = {}
    taken: set[str] = set()
    for col in inputs:
        python_type, _ = TYPES[col["type"]]
        name = _field_name(col["name"], taken)
        description = f"{col['type']} (MLflow)"
        if col.get("required", True):
            annotation = Annotated[python_type, BeforeValidator(_no_null)]
            field = Field(alias=col["name"], description=f"{description}, required")
        else:
            annotation = python_type | None
            field = Field(None, alias=col["name"], description=f"{description}, may be null")
        fields[name] = (annotation, field)
    return create_model(
        "Record", __config__=RECORD_CONFIG, __base__=None, __module__=__name__, **fields
    )


def _label_type(classes: Sequence[Any] | None) -> Any:
    kinds = {type(c) for c in classes or []}
    if len(kinds) == 1:
        return kinds.pop()
    return str | int | float | bool


def build_prediction_model(task: str, classes: Sequence[Any] | None) -> type[BaseModel]:
    if task == "classification":
        return create_model(
            "Prediction",
            __module__=__name__,
            prediction=(_label_type(classes), Field(description="the predicted class")),
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
    limits: dict[str, int] = Field(default_factory=dict)
    batching: dict[str, int] = Field(
        default_factory=dict,
        description="this worker's predict_batch so far: model calls and rows (rows per call "
        "above 1: the adaptive batcher merges requests)",
    )


# --- input frames -------------------------------------------------------------------------


class InputError(ValueError):
    """Bad input, worded for the client (answered with HTTP 400)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _is_integer(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


# MLflow column type -> (is the pandas dtype right as a whole?, is this one value right?)
_CHECKS: dict[str, tuple[Any, Any]] = {
    "double": (
        lambda s: pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s),
        _is_number,
    ),
    "long": (pd.api.types.is_integer_dtype, _is_integer),
    "string": (lambda s: all(isinstance(v, str) for v in s), lambda v: isinstance(v, str)),
    "boolean": (pd.api.types.is_bool_dtype, lambda v: isinstance(v, bool | np.bool_)),
}
_CHECKS["float"], _CHECKS["integer"] = _CHECKS["double"], _CHECKS["long"]


def _check_values(series: pd.Series, col: Mapping[str, Any]) -> pd.Series:
    """``series`` cast to the column's dtype, or InputError naming the column and rows."""
    name, kind = col["name"], col["type"]
    missing = series.isna().to_numpy()
    if missing.any() and col.get("required", True):
        rows = np.flatnonzero(missing)[:5].tolist()
        raise InputError(f"column {name!r} is required but null in row(s) {rows}")
    present = series[~missing]
    whole_ok, value_ok = _CHECKS[kind]
    if not whole_ok(present):
        for row, value in present.items():
            if not value_ok(value):
                shown = json.dumps(value, default=str)
                raise InputError(
                    f"column {name!r} expects {kind}, got {type(value).__name__} {shown} "
                    f"in row {row}"
                )
    try:
        return _cast(series, kind, missing)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"column {name!r}: {exc}") from None


def _cast(series: pd.Series, kind: str, missing: np.ndarray) -> pd.Series:
    """Checked values as training saw them: floats, ints (floats when some are missing, as
    pandas reads them), strings and booleans as objects with NaN for the missing ones."""
    if kind in ("double", "float"):
        return series.astype(TYPES[kind][1])
    if kind in ("long", "integer"):
        return series.astype("float64" if missing.any() else TYPES[kind][1])
    dtype = object if kind == "string" or missing.any() else bool
    return series.astype(dtype).where(~missing, np.nan)


def conform(frame: pd.DataFrame, inputs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The signature's columns of ``frame``, in order, typed as in training; extra columns
    are ignored (as MLflow does). Raises InputError for a missing column, a null in a
    required column or a value of the wrong type."""
    if len(frame) == 0:
        raise InputError("no rows: send at least one record")
    if len(frame) > MAX_ROWS:
        raise InputError(
            f"{len(frame)} rows is more than this service accepts in one request "
            f"({MAX_ROWS}, TAGSERVE_MAX_ROWS)"
        )
    absent = [col["name"] for col in inputs if col["name"] not in frame.columns]
    absent_required = [c["name"] for c in inputs if c["name"] in absent and c.get("required", True)]
    if absent_required:
        raise InputError(f"missing required column(s): {', '.join(map(repr, absent_required))}")
    frame = frame.reset_index(drop=True)
    columns = {}
    for col in inputs:
        series = frame[col["name"]] if col["name"] in frame.columns else None
        if series is None:
            series = pd.Series([None] * len(frame), dtype=object)
        elif isinstance(series, pd.DataFrame):
            raise InputError(f"column {col['name']!r} appears more than once")
        columns[col["name"]] = _check_values(series, col)
    return pd.DataFrame(columns)


def records_frame(
    records: Sequence[BaseModel], inputs: Sequence[Mapping[str, Any]]
) -> pd.DataFrame:
    """Validated records (already typed by pydantic) as the model's input frame.

    Built column by column from plain lists (one numpy array each), typed as ``_cast`` types
    them: this is on every request's path, and a per-column pandas ``astype`` costs about a
    millisecond more per request than the model's own preprocessing saves.
    """
    rows = [record.model_dump(by_alias=True) for record in records]
    columns = {}
    for col in inputs:
        name, kind = col["name"], col["type"]
        values = [row.get(name) for row in rows]
        missing = any(v is None for v in values)
        if kind in ("double", "float"):
            columns[name] = np.array(values, dtype=TYPES[kind][1])  # None -> NaN
        elif kind in ("long", "integer"):
            columns[name] = np.array(values, dtype="float64" if missing else TYPES[kind][1])
        elif kind == "boolean" and not missing:
            columns[name] = np.array(values, dtype=bool)
        else:  # strings, and booleans with missing values: objects with NaN
            columns[name] = np.array([np.nan if v is None else v for v in values], dtype=object)
    return pd.DataFrame(columns)


# --- the MLflow scoring protocol ------------------------------------------------------------

MLFLOW_JSON_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


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


def parse_mlflow_json(body: bytes, names: Sequence[str]) -> pd.DataFrame:
    """An MLflow scoring-protocol JSON body as a DataFrame (columns not checked yet)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the body is not valid JSON: {exc}") from None
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


def parse_mlflow_csv(body: bytes, inputs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    strings = {col["name"]: str for col in inputs if col["type"] == "string"}
    try:
        return pd.read_csv(io.StringIO(body.decode("utf-8")), dtype=strings)
    except UnicodeDecodeError as exc:
        raise InputError(f"the CSV body is not UTF-8: {exc}") from None
    except (ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        raise InputError(f"the body is not valid CSV: {' '.join(str(exc).split())}") from None


def _mlflow_error(message: str, status: int = 400) -> JSONResponse:
    # MLflow's scoring server answers errors as {"error_code": ..., "message": ...}.
    code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


async def invocations(request: Request) -> Response:
    """``POST /invocations``: the scoring protocol of ``mlflow models serve``."""
    import anyio

    service = bentoml.get_current_service()
    content_type = request.headers.get("content-type", "application/json")
    mime, *params = (part.strip() for part in content_type.split(";"))
    options = dict(p.partition("=")[::2] for p in params if p)
    if options.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        return _mlflow_error("the scoring server only supports UTF-8", 415)
    body = await request.body()
    try:
        if mime in ("application/json", ""):
            frame = parse_mlflow_json(body, [c["name"] for c in service.inputs])
        elif mime == "text/csv":
            frame = parse_mlflow_csv(body, service.inputs)
        else:
            return _mlflow_error(
                f"unsupported content type {mime!r}: use application/json or text/csv", 415
            )
        predictions = await anyio.to_thread.run_sync(service.predict_frame, frame)
    except InputError as exc:
        return _mlflow_error(str(exc))
    except Exception:
        logger.exception("/invocations failed")
        return _mlflow_error("the model failed on this input; see the server log", 500)
    return JSONResponse({"predictions": [_plain(p) for p in predictions]})


async def ping(_: Request) -> Response:
    """``GET /ping`` and ``/health``, as ``mlflow models serve`` answers them (clients wait
    on them): 200 once the model is loaded."""
    try:
        bentoml.get_current_service()
    except bentoml.exceptions.BentoMLException:
        return Response("\n", status_code=503, media_type="application/json")
    return Response("\n", status_code=200, media_type="application/json")


async def mlflow_version(_: Request) -> Response:
    """``GET /version``: the MLflow version, as ``mlflow models serve`` answers it."""
    from importlib.metadata import version

    return Response(version("mlflow"), media_type="text/plain")


async def metadata_get(_: Request) -> Response:
    return JSONResponse(bentoml.get_current_service().describe().model_dump(mode="json"))


def _plain(value: Any) -> Any:
    """numpy scalars as JSON-able Python values."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


protocol_app = Starlette(
    routes=[
        Route("/invocations", invocations, methods=["POST"]),
        Route("/metadata", metadata_get, methods=["GET"]),
        Route("/ping", ping, methods=["GET"]),
        Route("/health", ping, methods=["GET"]),
        Route("/version", mlflow_version, methods=["GET"]),
    ]
)


# --- readable 4xx answers -------------------------------------------------------------------


def _where(loc: Sequence[Any]) -> str:
    parts = list(loc)
    if parts and parts[0] == "root":  # the body of a list / root input
        parts = parts[1:]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def readable_error(body: Any) -> Any:
    """BentoML's 4xx bodies, with an ``error`` line that names each field and its problem.

    A pydantic error comes as ``{"error": "2 validation errors for X", "detail": [...]}``;
    other 4xx as ``[{"error": ...}]``. Both become ``{"error": "carat: Field required; ...",
    "detail": [...]}``.
    """
    if isinstance(body, list) and len(body) == 1 and isinstance(body[0], dict):
        body = body[0]
    if not isinstance(body, dict):
        return body
    detail = body.get("detail")
    if isinstance(detail, list) and detail and all(isinstance(d, dict) for d in detail):
        problems = [f"{_where(d.get('loc', ()))}: {d.get('msg', 'invalid')}" for d in detail]
        shown = "; ".join(problems[:10]) + (
            f"; ... ({len(problems)} in all)" if len(problems) > 10 else ""
        )
        detail = [{k: v for k, v in d.items() if k != "url"} for d in detail]
        body = {"error": f"invalid input: {shown}", "detail": detail}
    return body


class ReadableErrors:
    """ASGI middleware: rewrites the JSON body of BentoML's 4xx answers (readable_error)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if 400 <= message["status"] < 500 and headers.get(b"content-type", b"").startswith(
                    b"application/json"
                ):
                    held["start"] = message
                    return
            elif message["type"] == "http.response.body" and "start" in held:
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = b"".join(chunks)
                with contextlib.suppress(ValueError):
                    body = json.dumps(readable_error(json.loads(body))).encode()
                start = held.pop("start")
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, capture)


# --- loading --------------------------------------------------------------------------------


@contextlib.contextmanager
def _pickle_allowed() -> Iterator[None]:
    """MLflow (3.x) refuses to deserialize any model unless this is set; the models served
    here were exported by this project's pipeline and verified by its importer."""
    name = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    previous = os.environ.get(name)
    os.environ[name] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def load_model(path: str | Path) -> tuple[Any, bool]:
    """The model at ``path`` (an MLflow model): its native sklearn form with every
    ``n_jobs`` set to 1 (one request, one core; batches make the throughput), or the pyfunc
    wrapper when there is no loadable sklearn flavor. Returns (model, native)."""
    import warnings

    with _pickle_allowed(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import mlflow.sklearn

            model = mlflow.sklearn.load_model(str(path))
        except Exception as exc:  # no sklearn flavor, or it cannot be read here
            logger.warning("native sklearn loading failed (%s); using the pyfunc flavor", exc)
            import mlflow.pyfunc

            return mlflow.pyfunc.load_model(str(path)), False
    if hasattr(model, "get_params"):
        jobs = {k: 1 for k in model.get_params(deep=True) if k.split("__")[-1] == "n_jobs"}
        if jobs:
            model.set_params(**jobs)
    return model, True


# --- the service ----------------------------------------------------------------------------

_ARGS = _arguments()
_MODEL = _resolve_model(_ARGS)
MODEL_TAG = str(_MODEL.tag)
INTERFACE = _read_interface(_MODEL)
REVISION = _source_revision(_ARGS)
_record_arguments({"model": MODEL_TAG, **REVISION})

Record = build_record_model(INTERFACE["inputs"])
Prediction = build_prediction_model(INTERFACE["task"], INTERFACE.get("classes"))
Records = Annotated[list[Record], Field(min_length=1, max_length=MAX_ROWS)]


class RecordsInput(IORootModel[Records]):
    """``predict_batch``'s body: a JSON list of records (a BentoML root input).

    BentoML 1.4 parses a root input with ``json.loads``, so malformed JSON would end as a
    500: here it is a validation error like any other (400).
    """

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Any:
        try:
            parsed = json.loads(json_data)
        except ValueError as exc:
            raise ValidationError.from_exception_data(
                cls.__name__,
                [{"type": "json_invalid", "loc": (), "input": "", "ctx": {"error": str(exc)}}],
            ) from None
        return cls.model_validate(parsed, **kwargs)


RecordsInput.__root_input__ = True


@bentoml.asgi_app(protocol_app, path="/")
@bentoml.service(
    name="tagserve",
    description=(
        "The tagserve model. MLflow clients: POST /invocations (dataframe_split, "
        "dataframe_records, instances, inputs; or text/csv) -> {predictions: [...]}; "
        "GET /metadata."
    ),
    workers=WORKERS,
    traffic={"timeout": 60},
    labels={
        "model_tag": MODEL_TAG,
        "artifact": str(
            INTERFACE.get("artifact_qualified_name") or INTERFACE.get("artifact") or ""
        ),
        "git_commit": REVISION["git_commit"],
        "git_tag": REVISION["git_tag"],
    },
)
class Tagserve:
    """Serves one imported model (see the module docstring)."""

    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.inputs = INTERFACE["inputs"]
        self.task = INTERFACE["task"]
        self.model, self.native = load_model(self.bento_model.path_of(MLFLOW_FOLDER))
        self.batch_calls = self.batch_rows = 0
        classes = getattr(self.model, "classes_", None)
        self.classes = [_plain(c) for c in classes] if classes is not None else None
        example = self._example()
        if example is not None:
            self.model.predict(example)  # fail now rather than on the first request
        logger.info(
            "serving %s (%s, %s)",
            MODEL_TAG,
            self.task,
            "native sklearn" if self.native else "pyfunc",
        )

    def _example(self) -> pd.DataFrame | None:
        path = Path(self.bento_model.path_of(MLFLOW_FOLDER)) / "serving_input_example.json"
        with contextlib.suppress(OSError, ValueError, InputError):
            return parse_mlflow_json(path.read_bytes(), [c["name"] for c in self.inputs]).pipe(
                conform, self.inputs
            )
        return None

    def predict_frame(self, frame: pd.DataFrame) -> list[Any]:
        """Predictions for any frame (checked against the signature first): /invocations."""
        return list(np.asarray(self.model.predict(conform(frame, self.inputs))).ravel())

    def _answers(self, X: pd.DataFrame) -> list[dict[str, Any]]:
        predicted = [_plain(p) for p in np.asarray(self.model.predict(X)).ravel()]
        if self.task != "classification" or not hasattr(self.model, "predict_proba"):
            return [{"prediction": p} for p in predicted]
        proba = self.model.predict_proba(X)
        names = [str(c) for c in self.classes]
        return [
            {"prediction": p, "probabilities": dict(zip(names, map(float, row), strict=True))}
            for p, row in zip(predicted, proba, strict=True)
        ]

    @bentoml.api
    def predict(self, record: Record, /) -> Prediction:
        """One record -> its prediction (and class probabilities for a classifier)."""
        return Prediction(**self._answers(records_frame([record], self.inputs))[0])

    @bentoml.api(
        batchable=True,
        max_batch_size=MAX_BATCH_SIZE,
        max_latency_ms=MAX_LATENCY_MS,
        input_spec=RecordsInput,
    )
    def predict_batch(self, records: Records, /) -> list[Prediction]:
        """A list of records -> their predictions, in order. Concurrent requests are merged
        into one model call (adaptive batching)."""
        self.batch_calls += 1
        self.batch_rows += len(records)
        return [Prediction(**a) for a in self._answers(records_frame(records, self.inputs))]

    @bentoml.api
    def metadata(self) -> Metadata:
        """The model (tag, artifact, version, digest, signature, metrics) and the code (bento,
        git tag and commit) this service runs. Also ``GET /metadata``."""
        return self.describe()

    def describe(self) -> Metadata:
        meta = INTERFACE
        bento = None
        with contextlib.suppress(Exception):
            ctx = bentoml.server_context
            if ctx.bento_name and ctx.bento_version not in ("", "not available"):
                bento = f"{ctx.bento_name}:{ctx.bento_version}"
        return Metadata(
            model=MODEL_TAG,
            artifact=meta.get("artifact"),
            source_ref=meta.get("source_ref"),
            version=meta.get("version"),
            digest=meta.get("digest"),
            task=self.task,
            target=meta.get("target"),
            classes=self.classes or [],
            feature_columns=meta.get("feature_columns") or [c["name"] for c in self.inputs],
            signature=meta.get("signature") or {"inputs": self.inputs},
            metrics=meta.get("metrics") or {},
            bento=bento,
            git_tag=REVISION["git_tag"],
            git_commit=REVISION["git_commit"],
            model_git_commit=meta.get("git_commit"),
            run_id=meta.get("run_id"),
            limits={
                "max_rows": MAX_ROWS,
                "max_batch_size": MAX_BATCH_SIZE,
                "max_latency_ms": MAX_LATENCY_MS,
            },
            batching={"model_calls": self.batch_calls, "rows": self.batch_rows},
        )


Tagserve.add_asgi_middleware(ReadableErrors)
