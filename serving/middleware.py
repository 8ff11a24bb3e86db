"""The service's request path: every ASGI middleware tagserve adds, in the order a request meets
them, written as Starlette's own middleware is (plain ASGI classes over Starlette's ``Headers``,
``Request`` and ``Response``).

A request to the service passes, outermost first:

0. :class:`WholeAnswers`: an answer's start (status, headers) is held until its first body
   part and both are written together. BentoML's stack sends them with other requests' work
   in between, so a server killed at that moment would leave headers without a body, which
   no load balancer can retry; held, a killed server's requests get no answer at all, which
   HAProxy's ``retry-on empty-response`` sends to another server. uvicorn then writes the
   two in one socket write, not two (``serving.uvicorn_private``).
1. :class:`DrainMiddleware`: after SIGTERM, ``/readyz`` answers 503 and every answer carries
   ``Connection: close``; counts the requests in flight for the graceful drain
   (``serving.drain``).
2. :class:`ModelRouting`: each prediction request's model (live, canary, shadowed,
   ``serving.routing``), chosen before adaptive batching merges requests (a ``/predict_batch``
   request for the candidate is routed to its hidden batchable API), and ``X-Tagserve-Model``
   on the answer.
3. :class:`LoadShedding`: each prediction route's budget of requests in flight per worker
   (``serving.admission``; the V2 infer paths share one); past it, 503 with ``Retry-After``
   at once, before the body is read and before BentoML's own middleware (metrics, tracing,
   access log, timeout), which it is moved ahead of
   (``serving.bentoml_private.put_outermost_first``): a refusal must cost next to nothing.
   An admitted request's body is then read whole under
   ``TAGSERVE_REQUEST_READ_SECONDS`` (``serving.arrival``: 408 past it), by at most half the
   budget at once; a client that hangs up before its answer frees its slot at once (its
   request is cancelled, ``serving.bentoml_private.cancellable_timeouts``).
4. BentoML's own middleware.
5. :class:`ErrorAnswers`: every client error answered and logged in one readable line. BentoML's
   4xx bodies name each field and its problem (:func:`readable_error`); a 503 of the
   adaptive batcher (overloaded: a request waited past ``TAGSERVE_MAX_LATENCY_MS``) gets
   ``Retry-After``; a 405 names the documented methods in ``Allow``; the routers' plain-text
   404 and 405 become JSON in the route's error shape (:func:`error_body`).
6. :class:`RequestGuard`: the body cap (413, from Content-Length or as the body streams past
   it, never read whole), content types no route parses (multipart: 415, or 400 without a
   boundary) and an empty body where an API needs one (400 saying so); the body is read once
   here and handed on whole.

Then the routes: BentoML's APIs (``/predict``, ``/predict_batch``, ``POST /metadata``) and
``serving.routes``' (``/invocations``, ``GET /metadata``, ``/docs.json``, MLflow's health
routes, the Open Inference Protocol's ``/v2/...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from serving import bentoml_private, uvicorn_private
from serving.admission import InFlight, receiving_message, shed_message
from serving.arrival import ARRIVED, GONE, TIMED_OUT, Arrival, IntervalLog, read_body
from serving.drain import Drain
from serving.guard import (
    body_too_large,
    content_type_problem,
    declared_length,
    empty_body_problem,
)
from serving.metrics import arrival_metrics, shedding_metrics
from serving.routes import (
    BATCH_ROUTES,
    HIDDEN_PREFIX,
    MLFLOW_PATHS,
    PREDICT_BATCH,
    PREDICTION_PATHS,
    READYZ,
    SHED_PATHS,
    v2_routed_path,
    v2_shed_paths,
)
from serving.routing import (
    CANDIDATE,
    LIVE,
    MODEL_HEADER,
    REQUEST_KEY_HEADER,
    SHADOWED,
    choose,
    route_var,
)
from serving.settings import Settings

logger = logging.getLogger("bentoml.service.tagserve")
CLOSE = {"connection": "close"}
JSON = "application/json"
# The path a client sent, by the hidden path ModelRouting gave its request.
EXTERNAL_PATHS = {hidden: PREDICT_BATCH for hidden in BATCH_ROUTES.values()}
# A request that finds its route's receiving share full (serving.admission) is served if its
# body arrives within this long: an honest client's body follows its headers at once.
GRACE_SECONDS = 1.0
# Set in a request's scope once its client is gone: its errors are not logged one by one.
GONE_KEY = "tagserve.client_gone"


def stack(
    settings: Settings, allowed: Mapping[str, str], routing: Mapping[str, str] | None = None
) -> list[tuple[type, dict[str, Any]]]:
    """tagserve's middleware with its options, outermost first (the module docstring);
    ``routing``: the live and candidate model tags (``{"live": ..., "candidate": ...}``)."""
    routing = {"live": settings.model, "candidate": "", **(routing or {})}
    return [
        (WholeAnswers, {}),
        (DrainMiddleware, {"seconds": settings.drain_seconds}),
        (
            ModelRouting,
            {
                **routing,
                "percent": settings.canary_percent,
                "fraction": settings.shadow_fraction,
            },
        ),
        (LoadShedding, shedding(settings, routing)),
        (ErrorAnswers, {"allowed": allowed, "retry_after": settings.retry_after_s}),
        (RequestGuard, {"max_body_bytes": settings.max_body_bytes}),
    ]


def shedding(settings: Settings, routing: Mapping[str, str]) -> dict[str, Any]:
    """:class:`LoadShedding`'s options: a budget per prediction route, and one for every V2
    infer path together, of the bulk size (a V2 request may hold many rows, as
    ``/invocations``'); the paths beside the first share its budget."""
    first, *others = v2_shed_paths(list(routing.values()))
    options = settings.shedding(paths=[*SHED_PATHS, first])
    return {**options, "shared": {path: first for path in others}}


def install(
    service: Any,
    settings: Settings,
    allowed: Mapping[str, str],
    routing: Mapping[str, str] | None = None,
) -> None:
    """Add :func:`stack` to the BentoML ``service``; ``allowed``: each documented path's
    methods, as an ``Allow`` header (``serving.openapi.allowed_methods``)."""
    bentoml_private.put_outermost_first()
    bentoml_private.cancellable_timeouts()
    uvicorn_private.one_write_answers()
    for middleware, options in stack(settings, allowed, routing):
        service.add_asgi_middleware(middleware, **options)


def error_body(path: str, message: str) -> dict[str, Any]:
    """An error as the route's clients read it: MLflow's form on ``/invocations``, else
    ``{"error": ...}`` as every other tagserve error."""
    if path in MLFLOW_PATHS:
        return {"error_code": "BAD_REQUEST", "message": message}
    return {"error": message}


def error_response(path: str, status: int, message: str, **headers: str) -> JSONResponse:
    """:func:`error_body` as an answer of ``status``."""
    return JSONResponse(error_body(path, message), status_code=status, headers=headers or None)


def routing_error(method: str, path: str, status: int, allow: str | None) -> str:
    """The error of a request no route takes: 404 (no such path) or 405 (not this method)."""
    if status == 404:
        return f"not found: this service has no route {path}; its API page is at /docs"
    return f"method not allowed: {path} does not take {method}" + (
        f"; it takes {allow}" if allow else ""
    )


class WholeAnswers:
    """Holds ``http.response.start`` until the first ``http.response.body``. Outermost: the
    server's own send is the next thing it calls."""

    bentoml_outermost = True  # serving.bentoml_private.put_outermost_first

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[dict] = []

        async def send_whole(message: dict) -> None:
            if message["type"] == "http.response.start":
                held.append(message)
                return
            if held and message["type"] == "http.response.body":
                await send(held.pop())  # no await in between yields to another task
            await send(message)

        await self.app(scope, receive, send_whole)
        if held:  # an answer without a body message: its start alone
            await send(held.pop())


class DrainMiddleware:
    """Takes SIGTERM over at start-up (``serving.drain.Drain``); while draining, ``/readyz``
    answers 503 and every answer carries ``Connection: close``; counts the requests in
    flight."""

    # Before BentoML's middleware (serving.bentoml_private.put_outermost_first): it counts and
    # marks every request, those another middleware refuses included.
    bentoml_outermost = True

    def __init__(self, app: Any, *, seconds: float) -> None:
        self.app = app
        self.drain = Drain(seconds)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            self.drain.install()
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        drain = self.drain
        if drain.draining and scope.get("path") == READYZ:
            refusal = JSONResponse({"status": "draining"}, status_code=503, headers=CLOSE)
            return await refusal(scope, receive, send)

        async def marked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and drain.draining:
                message = {**message, "headers": list(message.get("headers") or [])}
                MutableHeaders(scope=message).update(CLOSE)
            await send(message)

        drain.in_flight += 1
        try:
            await self.app(scope, receive, marked)
        finally:
            drain.in_flight -= 1


class ModelRouting:
    """The route of each prediction request (``serving.routing.choose``), the hidden
    ``/predict_batch`` API it goes to, and ``X-Tagserve-Model`` on its answer."""

    bentoml_outermost = True  # before BentoML's router sees the path

    def __init__(
        self, app: Any, *, live: str, candidate: str = "", percent: float, fraction: float
    ) -> None:
        self.app = app
        self.tags = {LIVE: live, SHADOWED: live, CANDIDATE: candidate}
        self.percent = percent if candidate else 0.0
        self.fraction = fraction if candidate else 0.0
        self.rng = random.Random()
        self.paths = PREDICTION_PATHS | {v2_routed_path(live)}  # V2 infer, unversioned

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path.startswith(HIDDEN_PREFIX):
            not_found = JSONResponse({"error": "not found"}, status_code=404)
            return await not_found(scope, receive, send)
        if path not in self.paths:
            return await self.app(scope, receive, send)
        route = LIVE
        if self.percent or self.fraction:
            key = Headers(scope=scope).get(REQUEST_KEY_HEADER)
            route = choose(self.percent, self.fraction, key and key.encode(), self.rng)
        if path == PREDICT_BATCH and route in BATCH_ROUTES:
            scope = {**scope, "path": BATCH_ROUTES[route], "raw_path": BATCH_ROUTES[route].encode()}
        tag = self.tags[route]

        async def tagged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers") or [])}
                MutableHeaders(scope=message).append(MODEL_HEADER, tag)
            await send(message)

        token = route_var.set(route)
        try:
            await self.app(scope, receive, tagged)
        finally:
            route_var.reset(token)


class LoadShedding:
    """Admits at most a budget of concurrent POSTs to each path of ``budgets`` per worker
    (``serving.admission``; a path of ``shared`` counts against the budget of the path it
    names), reads each admitted request's body under ``read_seconds``
    (``serving.arrival``) and cancels a request whose client hangs up before its answer.
    Refusals: 503 with ``Retry-After: retry_after`` at once; a body too slow, 408."""

    bentoml_outermost = True  # before BentoML's middleware: see the module docstring

    def __init__(
        self,
        app: Any,
        *,
        budgets: Mapping[str, tuple[int, str]],
        retry_after: int,
        read_seconds: float,
        max_body_bytes: int | None,
        shared: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.admitted = {path: InFlight(budget) for path, (budget, _) in budgets.items()}
        self.settings = {path: setting for path, (_, setting) in budgets.items()}
        for path, owner in (shared or {}).items():  # a path admitted on another's budget
            self.admitted[path], self.settings[path] = self.admitted[owner], self.settings[owner]
        self.retry_after = retry_after
        self.read_seconds = read_seconds
        # A request that finds the receiving share full gets this long to finish its body.
        self.grace_seconds = min(GRACE_SECONDS, read_seconds)
        self.max_body_bytes = max_body_bytes
        self.refused = shedding_metrics().refused
        self.log = IntervalLog()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        admitted = scope["type"] == "http" and scope["method"] == "POST"
        if not admitted or scope["path"] not in self.admitted:
            return await self.app(scope, receive, send)
        path, in_flight = scope["path"], self.admitted[scope["path"]]
        if in_flight.full:
            return await self.shed(scope, receive, send)
        length = declared_length(Headers(scope=scope))
        if self.max_body_bytes is not None and length is not None and length > self.max_body_bytes:
            # Refused unread by serving.middleware.RequestGuard (413) at once.
            return await self.admitted_call(in_flight, scope, receive, send)
        if in_flight.try_enter(receiving=True):
            try:
                arrival = await read_body(
                    receive, seconds=self.read_seconds, max_bytes=self.max_body_bytes
                )
            finally:
                in_flight.arrived()
            if not await self.arrived(arrival, scope, receive, send):
                return in_flight.leave()
            try:
                return await self.watched(arrival.body, scope, receive, send)
            finally:
                in_flight.leave()
        # The receiving share is full: a body that is (nearly) here is still served.
        arrival = await read_body(
            receive, seconds=self.grace_seconds, max_bytes=self.max_body_bytes
        )
        if arrival.outcome == TIMED_OUT:
            self.refused.labels(endpoint=path).inc()
            self.log.add("refused receiving", path)
            message = receiving_message(path, in_flight.receiving_limit, self.retry_after)
            headers = {"Retry-After": str(self.retry_after), **CLOSE}
            return await error_response(path, 503, message, **headers)(scope, receive, send)
        if not await self.arrived(arrival, scope, receive, send):
            return None
        if not in_flight.try_enter():
            return await self.shed(scope, receive, send)
        try:
            return await self.watched(arrival.body, scope, receive, send)
        finally:
            in_flight.leave()

    async def admitted_call(self, in_flight: InFlight, scope: Any, receive: Any, send: Any):
        if not in_flight.try_enter():
            return await self.shed(scope, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            in_flight.leave()

    async def shed(self, scope: Any, receive: Any, send: Any) -> None:
        # The unread body is discarded by the server; the connection stays usable.
        path = scope["path"]
        self.refused.labels(endpoint=path).inc()
        budget = self.admitted[path].budget
        message = shed_message(path, budget, self.retry_after, self.settings[path])
        refusal = error_response(path, 503, message, **{"Retry-After": str(self.retry_after)})
        await refusal(scope, receive, send)

    async def arrived(self, arrival: Arrival, scope: Any, receive: Any, send: Any) -> bool:
        """Whether the body arrived whole; if not, the answer (or none: the client left)."""
        path = scope["path"]
        if arrival.outcome == ARRIVED:
            return True
        if arrival.outcome == GONE:
            arrival_metrics().abandoned.labels(endpoint=path).inc()
            self.log.add(GONE, path)
        elif arrival.outcome == TIMED_OUT:
            arrival_metrics().read_timeout.labels(endpoint=path).inc()
            self.log.add(TIMED_OUT, path)
            message = (
                f"the request's body did not arrive within {self.read_seconds:g} s "
                "(TAGSERVE_REQUEST_READ_SECONDS); send the whole body at once"
            )
            await error_response(path, 408, message, **CLOSE)(scope, receive, send)
        else:  # TOO_LARGE
            assert self.max_body_bytes is not None
            too_large = body_too_large(self.max_body_bytes)
            await error_response(path, 413, too_large, **CLOSE)(scope, receive, send)
        return False

    async def watched(self, body: bytes, scope: Any, receive: Any, send: Any) -> None:
        """The app on the request whose ``body`` arrived; cancelled if its client hangs up
        before the answer is complete (a request waiting in line or in an adaptive batch is
        dropped from it)."""
        watch = asyncio.ensure_future(receive())
        delivered, complete = False, False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await asyncio.shield(watch)

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True
            await send(message)

        work = asyncio.ensure_future(self.app(scope, replay, tracked))
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
            gone = watch.done() and watch.result()["type"] == "http.disconnect"
            if gone and not work.done() and not complete:  # uvicorn: the client left
                scope[GONE_KEY] = True  # what the request still answers goes nowhere
                work.cancel()
                arrival_metrics().abandoned.labels(endpoint=scope["path"]).inc()
                self.log.add(GONE, scope["path"])
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                return None
            await work
        finally:
            work.cancel()
            watch.cancel()


class ErrorAnswers:
    """Client errors made readable, and logged once each (see the module docstring); the
    service's own failures (5xx but overload) pass as BentoML answers and logs them."""

    def __init__(self, app: Any, *, allowed: Mapping[str, str], retry_after: int) -> None:
        self.app = app
        self.allowed = dict(allowed)
        self.retry_after = retry_after
        bentoml_private.quiet_client_error_tracebacks()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def held_errors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if 400 <= status < 500 or status == 503:
                    held["start"] = message
                    return
            elif "start" in held and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                start = held.pop("start")
                return await self.send_error(scope, send, start, b"".join(chunks))
            await send(message)

        await self.app(scope, receive, held_errors)

    async def send_error(self, scope: Any, send: Any, start: dict, body: bytes) -> None:
        status = start["status"]
        headers = MutableHeaders(raw=list(start["headers"]))
        if headers.get("content-type", "").startswith(JSON):
            with contextlib.suppress(orjson.JSONDecodeError):  # not JSON after all: as it is
                body = orjson.dumps(readable_error(orjson.loads(body), status))
        if status == 503:
            headers.setdefault("retry-after", str(self.retry_after))
        if status == 405 and scope["path"] in self.allowed:
            # Two routers share some paths (BentoML's POST /metadata, serving.routes' GET):
            # the document lists what the path answers.
            headers["allow"] = self.allowed[scope["path"]]
        if status in (404, 405) and not headers.get("content-type", "").startswith(JSON):
            # Starlette's routers answer these in plain text: in the route's error shape.
            path = scope["path"]
            message = routing_error(scope["method"], path, status, headers.get("allow"))
            body = orjson.dumps(error_body(path, message))
            headers["content-type"] = JSON
        headers["content-length"] = str(len(body))
        if not scope.get(GONE_KEY):
            logger.info(
                "%s %s %d: %s", scope["method"], scope["path"], status, error_line(body, status)
            )
        await send({**start, "headers": headers.raw})
        await send({"type": "http.response.body", "body": body})


def error_line(body: bytes, status: int) -> str:
    """The error of an answer's body, in one line (its ``error`` or ``message``)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = body.decode("utf-8", "replace")
    if isinstance(parsed, dict):
        parsed = parsed.get("error") or parsed.get("message") or parsed
    return " ".join(str(parsed).split())[:500] or str(status)


class RequestGuard:
    """Refuses a body over ``max_body_bytes`` with 413, from its Content-Length or as soon as
    it streams past the cap (it is never read whole), and a content type no route takes
    (``serving.guard.content_type_problem``); other requests reach the app with their body
    read, in one message."""

    def __init__(self, app: Any, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        path = scope["path"]
        problem = content_type_problem(headers.get("content-type"))
        if problem:
            return await error_response(path, *problem)(scope, receive, send)
        too_large = error_response(path, 413, body_too_large(self.max_body_bytes))
        length = declared_length(headers)
        if length is not None and length > self.max_body_bytes:
            return await too_large(scope, receive, send)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in Request(scope, receive).stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    return await too_large(scope, receive, send)
                chunks.append(chunk)
        except ClientDisconnect:  # the client left: nothing to answer
            return None
        body = b"".join(chunks)
        empty = empty_body_problem(EXTERNAL_PATHS.get(path, path), body)
        if empty and scope["method"] == "POST":
            return await error_response(path, 400, empty)(scope, receive, send)
        whole = {"type": "http.request", "body": body, "more_body": False}
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return whole
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


# --- readable 4xx answers (ErrorAnswers) -----------------------------------------------


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
