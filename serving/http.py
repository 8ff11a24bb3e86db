"""The service's HTTP extras: MLflow's routes (``/invocations``, ``/ping``, ``/health``,
``/version``), ``GET /metadata``, and a middleware that makes BentoML's 4xx bodies readable."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

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
        predictions = await anyio.to_thread.run_sync(service.model.predict, frame)
        service.monitor.record(frame, predictions)
    except UnsupportedMediaType as exc:
        return _mlflow_error(str(exc), 415)
    except InputError as exc:
        return _mlflow_error(str(exc))
    except INPUT_FAULTS as exc:  # checked values the model still cannot take
        logger.warning("/invocations: the model cannot take the input: %s", described(exc))
        return _mlflow_error(f"the model cannot take this input ({described(exc)})")
    except Exception:
        logger.exception("/invocations failed")
        return _mlflow_error("the model failed on this input; see the server log", 500)
    return JSONResponse({"predictions": [plain(p) for p in predictions]})


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


async def monitoring_get(_: Request) -> Response:
    """``GET /monitoring``: the last drift and data-quality test of the traffic (JSON)."""
    return JSONResponse(bentoml.get_current_service().monitor.status())


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
