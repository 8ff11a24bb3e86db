"""Every route path of the service, spelled here once, and the routes mounted beside BentoML's
APIs: MLflow's (``/invocations``, ``/ping``, ``/health``, ``/version``), ``GET /metadata``,
``/monitoring``, the OpenAPI document (``/docs.json``) and its page (``/docs``), and the Open
Inference Protocol's (``/v2/...``, handled in ``serving.v2_routes``). Their handlers read the
service through ``serving.state.current``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import bentoml
import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inference import strict_json
from inference.errors import InputError
from serving import v2_routes
from serving.batching import INPUT_FAULTS, described
from serving.protocol import UnsupportedMediaType, parse_invocation
from serving.routing import CANDIDATE, LIVE, SHADOWED
from serving.state import current

# BentoML's APIs (service.Tagserve)
PREDICT, PREDICT_BATCH, METADATA = "/predict", "/predict_batch", "/metadata"
# The routes mounted beside them (protocol_app)
INVOCATIONS, DOCUMENT, API_PAGE = "/invocations", "/docs.json", "/docs"
MONITORING, MONITORING_REPORT = "/monitoring", "/monitoring/report"
PING, HEALTH, VERSION = "/ping", "/health", "/version"
# BentoML's own infrastructure routes
LIVEZ, READYZ, HEALTHZ, METRICS = "/livez", "/readyz", "/healthz", "/metrics"
# The Open Inference Protocol (KServe V2 REST; serving.v2_routes): the server's paths, and a
# model's, without its version and with it (each + V2_READY_SUFFIX, + V2_INFER_SUFFIX).
V2, V2_LIVE, V2_READY = "/v2", "/v2/health/live", "/v2/health/ready"
V2_MODEL, V2_MODEL_VERSION = "/v2/models/{name}", "/v2/models/{name}/versions/{version}"
V2_MODEL_PATHS = (V2_MODEL, V2_MODEL_VERSION)
V2_READY_SUFFIX, V2_INFER_SUFFIX = "/ready", "/infer"

# The hidden batchable APIs /predict_batch requests are routed to (not reachable from outside).
HIDDEN_PREFIX = "/_tagserve/"
CANDIDATE_BATCH = f"{HIDDEN_PREFIX}predict_batch_candidate"
SHADOWED_BATCH = f"{HIDDEN_PREFIX}predict_batch_shadowed"
BATCH_ROUTES = {CANDIDATE: CANDIDATE_BATCH, SHADOWED: SHADOWED_BATCH}
# The batchable APIs: path, model route (serving.routing), description.
BATCH_APIS = (
    (
        PREDICT_BATCH,
        LIVE,
        "A list of records -> their predictions, in order. Concurrent requests are merged "
        "into one model call (adaptive batching).",
    ),
    (CANDIDATE_BATCH, CANDIDATE, "/predict_batch requests the canary gives to the candidate."),
    (
        SHADOWED_BATCH,
        SHADOWED,
        "/predict_batch requests the live model answers and the candidate shadows.",
    ),
)
PREDICTION_PATHS = frozenset({PREDICT, PREDICT_BATCH, INVOCATIONS})  # the canary's and shadow's
# A budget of requests in flight per worker each, their bodies read under a deadline
# (serving.admission, serving.arrival).
SHED_PATHS = (PREDICT, PREDICT_BATCH, INVOCATIONS)
MLFLOW_PATHS = (INVOCATIONS,)  # errors answered in MLflow's form there


def v2_infer_paths(tag: str) -> tuple[str, str]:
    """The two V2 infer paths of the model of BentoML ``tag``: without its version, and with
    it."""
    name, _, version = tag.partition(":")
    paths = (f"{model}{V2_INFER_SUFFIX}" for model in V2_MODEL_PATHS)
    unversioned, versioned = (path.format(name=name, version=version) for path in paths)
    return unversioned, versioned


def v2_routed_path(live_tag: str) -> str:
    """The V2 infer path the canary and the shadow route (``serving.middleware.ModelRouting``):
    the live model's, without a version. A versioned path names its model (the candidate's
    included), so it is never routed."""
    return v2_infer_paths(live_tag)[0]


def v2_shed_paths(tags: Sequence[str]) -> list[str]:
    """Every V2 infer path of the models of ``tags`` (empty tags skipped): load shedding's,
    one budget for them all (``serving.middleware.stack``)."""
    paths = (path for tag in tags if tag for path in v2_infer_paths(tag))
    return list(dict.fromkeys(paths))  # a candidate of the live model's name: its path once


logger = logging.getLogger("bentoml.service.tagserve")


def _mlflow_error(message: str, status: int = 400) -> JSONResponse:
    # MLflow's scoring server answers errors as {"error_code": ..., "message": ...}.
    code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


async def invocations(request: Request) -> Response:
    """``POST /invocations``: the scoring protocol of ``mlflow models serve``."""
    import anyio

    state = current()
    body = await request.body()
    try:
        frame = parse_invocation(
            body, request.headers.get("content-type"), state.contract, state.settings.max_rows
        )
        predictions = await anyio.to_thread.run_sync(state.models.predict_frame, frame)
        state.monitor.record(frame, predictions)
    except UnsupportedMediaType as exc:
        return _mlflow_error(str(exc), 415)
    except InputError as exc:
        return _mlflow_error(str(exc))
    except INPUT_FAULTS as exc:  # checked values the model still cannot take
        return _mlflow_error(f"the model cannot take this input ({described(exc)})")
    except Exception:
        logger.exception("/invocations failed")
        return _mlflow_error("the model failed on this input; see the server log", 500)
    return Response(predictions_body(predictions), media_type="application/json")


def predictions_body(predictions: np.ndarray) -> bytes:
    """``{"predictions": [...]}`` as strict JSON, written by orjson (numbers straight from the
    array; a non-finite number as null)."""
    if predictions.dtype.kind == "f":
        values: Any = predictions.astype(np.float64, copy=False)
        return orjson.dumps({"predictions": values}, option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.dumps({"predictions": [strict_json.plain(p) for p in predictions]})


async def ping(_: Request) -> Response:
    """``GET /ping`` and ``/health``, as ``mlflow models serve`` answers them (clients wait
    on them): 200 once the model is loaded."""
    try:
        current()
    except bentoml.exceptions.BentoMLException:
        return Response("\n", status_code=503, media_type="application/json")
    return Response("\n", status_code=200, media_type="application/json")


async def mlflow_version(_: Request) -> Response:
    """``GET /version``: the MLflow version, as ``mlflow models serve`` answers it."""
    from importlib.metadata import version

    return Response(version("mlflow"), media_type="text/plain")


async def metadata_get(_: Request) -> Response:
    metadata = current().describe().model_dump(mode="json")
    return Response(strict_json.dumps(metadata), media_type="application/json")


async def openapi_document(_: Request) -> Response:
    """``GET /docs.json``: the service's own OpenAPI document (``serving.openapi``), in place of
    BentoML's generated one (this route is matched first)."""
    return Response(current().openapi_body, media_type="application/json")


async def api_page(_: Request) -> Response:
    """``GET /docs``: BentoML's API page (Swagger UI over ``/docs.json``), served at ``/``."""
    from starlette.responses import RedirectResponse

    return RedirectResponse("./", status_code=307)  # relative: right behind a path prefix


async def monitoring_get(_: Request) -> Response:
    """``GET /monitoring``: the last drift and data-quality test of the traffic (JSON), and
    the candidate's shadow comparison with the live model when there is a candidate."""
    import anyio

    state = current()
    status = state.monitor.status()
    # Merging every worker's shadow comparison sorts their |diff| values: off the event loop.
    comparison = await anyio.to_thread.run_sync(state.models.comparison)
    if comparison is not None:
        status = {**status, "candidate": comparison}
    return Response(strict_json.dumps(status), media_type="application/json")


async def monitoring_report(_: Request) -> Response:
    """``GET /monitoring/report``: the same as a page (inline SVG, no script)."""
    from starlette.responses import HTMLResponse

    from inference.drift_report import render

    state = current()
    return HTMLResponse(render(state.monitor.status(), model=state.models.live_tag))


def protocol_app() -> Starlette:
    """The routes mounted beside BentoML's own (``@bentoml.asgi_app``)."""
    return Starlette(
        routes=[
            Route(INVOCATIONS, invocations, methods=["POST"]),
            Route(METADATA, metadata_get, methods=["GET"]),
            Route(DOCUMENT, openapi_document, methods=["GET"]),
            Route(API_PAGE, api_page, methods=["GET"]),
            Route(MONITORING, monitoring_get, methods=["GET"]),
            Route(MONITORING_REPORT, monitoring_report, methods=["GET"]),
            Route(PING, ping, methods=["GET"]),
            Route(HEALTH, ping, methods=["GET"]),
            Route(VERSION, mlflow_version, methods=["GET"]),
            *v2_app_routes(),
        ]
    )


def v2_app_routes() -> list[Route]:
    """The Open Inference Protocol's routes (``serving.v2_routes``' handlers)."""
    models = [
        (f"{model}{suffix}", handler, method)
        for model in V2_MODEL_PATHS
        for suffix, handler, method in (
            ("", v2_routes.metadata, "GET"),
            (V2_READY_SUFFIX, v2_routes.model_ready, "GET"),
            (V2_INFER_SUFFIX, v2_routes.infer, "POST"),
        )
    ]
    return [
        Route(V2, v2_routes.server, methods=["GET"]),
        Route(V2_LIVE, v2_routes.live, methods=["GET"]),
        Route(V2_READY, v2_routes.ready, methods=["GET"]),
        *(Route(path, handler, methods=[method]) for path, handler, method in models),
    ]
