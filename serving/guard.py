"""Checks on every HTTP request before any route reads its body: a body-size cap (413) and
content types no route can parse (multipart: 415, or 400 without a boundary). An ASGI
middleware, so that they hold for BentoML's routes (``/predict``, ``/predict_batch``,
``/metadata``) and MLflow's (``/invocations``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from serving.protocol import media_type

MLFLOW_PATHS = ("/invocations",)  # answer errors in MLflow's form there


def body_too_large(max_body_bytes: int) -> str:
    return (
        f"the body is larger than this service accepts ({max_body_bytes} bytes, "
        "TAGSERVE_MAX_BODY_BYTES; send fewer rows per request)"
    )


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The request's Content-Length, or None if it has none (or an unreadable one: the HTTP
    server refuses those itself)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def content_type_problem(content_type: str | None) -> tuple[int, str] | None:
    """The status and error of a body of ``content_type`` that no route takes, or None.

    BentoML parses any ``multipart/form-data`` body as a form: without a boundary parameter
    its parser fails with a KeyError, on a malformed form with a parser error (500s). No
    tagserve API takes a form (no record field is a file, and form values are text where
    the records are typed), so multipart is refused before BentoML reads it.
    """
    if not content_type:
        return None
    mime, options = media_type(content_type)
    if mime != "multipart/form-data":
        return None
    if not options.get("boundary"):
        return 400, "multipart/form-data needs a boundary parameter; these APIs take JSON"
    return 415, "unsupported content type multipart/form-data: these APIs take application/json"


def error_body(path: str, message: str) -> bytes:
    """An error as the route's clients read it: MLflow's form on ``/invocations``, else
    ``{"error": ...}`` as for every other tagserve 4xx."""
    if path in MLFLOW_PATHS:
        return json.dumps({"error_code": "BAD_REQUEST", "message": message}).encode()
    return json.dumps({"error": message}).encode()


class RequestGuard:
    """ASGI middleware: refuses a body over ``max_body_bytes`` with 413, from its
    Content-Length or as soon as it streams past the cap (it is never read whole), and a
    content type no route takes (:func:`content_type_problem`); other requests reach the app
    with their body read, as one message."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope.get("headers") or []
        path = scope.get("path", "")
        content_type = next(
            (v.decode("latin-1") for k, v in headers if k.lower() == b"content-type"), None
        )
        problem = content_type_problem(content_type)
        if problem:
            return await _answer(send, problem[0], error_body(path, problem[1]))
        length = declared_length(headers)
        if length is not None and length > self.max_body_bytes:
            return await _answer(send, 413, error_body(path, body_too_large(self.max_body_bytes)))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                body = error_body(path, body_too_large(self.max_body_bytes))
                return await _answer(send, 413, body)
            if not message.get("more_body"):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return whole
            return await receive()  # after the body: the disconnect, when it comes

        return await self.app(scope, replay, send)


async def _answer(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
