"""The service's routes beside BentoML's APIs: MLflow's (``/invocations``, ``/ping``,
``/health``, ``/version``), ``GET /metadata`` and the OpenAPI document (``/docs.json``); and
the wording of BentoML's error bodies (``serving.middleware.ErrorAnswers`` applies it)."""

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
from inference.contract import plain
from inference.errors import InputError
from serving.batching import INPUT_FAULTS, described
from serving.protocol import UnsupportedMediaType, parse_invocation

logger = logging.getLogger("bentoml.service.tagserve")


def _mlflow_error(message: str, status: int = 400) -> JSONResponse:
    # MLflow's scoring server answers errors as {"error_code": ..., "message": ...}.
    code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


async def invocations(request: Request) -> Response:
    """``POST /invocations``: the scoring protocol of ``mlflow models serve``."""
    import anyio

    service = bentoml.get_current_service()
    body = await request.body()
    try:
        frame = parse_invocation(
            body, request.headers.get("content-type"), service.contract, service.settings.max_rows
        )
        predictions = await anyio.to_thread.run_sync(service.models.predict, frame)
        service.monitor.record(frame, predictions)
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
    return orjson.dumps({"predictions": [plain(p) for p in predictions]})


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
    described = bentoml.get_current_service().describe().model_dump(mode="json")
    return Response(strict_json.dumps(described), media_type="application/json")


async def openapi_document(_: Request) -> Response:
    """``GET /docs.json``: the service's own OpenAPI document (``serving.openapi``), in place of
    BentoML's generated one (this route is matched first)."""
    return Response(bentoml.get_current_service().openapi_body, media_type="application/json")


async def monitoring_get(_: Request) -> Response:
    """``GET /monitoring``: the last drift and data-quality test of the traffic (JSON), and
    the candidate's shadow comparison with the live model when there is a candidate."""
    service = bentoml.get_current_service()
    status = service.monitor.status()
    comparison = service.models.comparison()
    if comparison is not None:
        status = {**status, "candidate": comparison}
    return Response(strict_json.dumps(status), media_type="application/json")


async def monitoring_report(_: Request) -> Response:
    """``GET /monitoring/report``: the same as a page (inline SVG, no script)."""
    from starlette.responses import HTMLResponse

    from inference.drift_report import render

    service = bentoml.get_current_service()
    return HTMLResponse(render(service.monitor.status(), model=service.describe().model))


def protocol_app() -> Starlette:
    """The routes mounted beside BentoML's own (``@bentoml.asgi_app``)."""
    return Starlette(
        routes=[
            Route("/invocations", invocations, methods=["POST"]),
            Route("/metadata", metadata_get, methods=["GET"]),
            Route("/docs.json", openapi_document, methods=["GET"]),
            Route("/monitoring", monitoring_get, methods=["GET"]),
            Route("/monitoring/report", monitoring_report, methods=["GET"]),
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


def readable_error(body: Any, status: int = 400) -> Any:
    """BentoML's 4xx bodies, with an ``error`` line that names each field and its problem.

    A pydantic error comes as ``{"error": "2 validation errors for X", "detail": [...]}``;
    other 4xx as ``[{"error": ...}]``. Both become ``{"error": "carat: Field required; ...",
    "detail": [...]}``. A 503 (the adaptive batcher shedding a request that waited past its
    latency budget) says so, instead of BentoML's "unexpected error".
    """
    if isinstance(body, list) and len(body) == 1 and isinstance(body[0], dict):
        body = body[0]
    if not isinstance(body, dict):
        return body
    if status == 503 and "error" in body and "error_code" not in body:
        return {
            "error": "overloaded: this request waited longer than the adaptive batcher's "
            "latency budget (TAGSERVE_MAX_LATENCY_MS) before its model call could start; "
            "retry after Retry-After seconds"
        }
    detail = body.get("detail")
    if isinstance(detail, list) and detail and all(isinstance(d, dict) for d in detail):
        problems = [f"{_where(d.get('loc', ()))}: {d.get('msg', 'invalid')}" for d in detail]
        shown = "; ".join(problems[:10]) + (
            f"; ... ({len(problems)} in all)" if len(problems) > 10 else ""
        )
        detail = [{k: v for k, v in d.items() if k != "url"} for d in detail]
        body = {"error": f"invalid input: {shown}", "detail": detail}
    return body
