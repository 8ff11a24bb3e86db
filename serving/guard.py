"""What every HTTP request is checked for before any route reads its body, as plain functions
(``serving.middleware.RequestGuard`` applies them to BentoML's routes and MLflow's alike): a
body-size cap (413) and content types no route can parse (multipart: 415, or 400 without a
boundary)."""

from __future__ import annotations

from collections.abc import Mapping

from serving.protocol import media_type


def body_too_large(max_body_bytes: int) -> str:
    return (
        f"the body is larger than this service accepts ({max_body_bytes} bytes, "
        "TAGSERVE_MAX_BODY_BYTES; send fewer rows per request)"
    )


# What an empty body should have held, by the BentoML API path it is sent to.
EMPTY_BODY_ADVICE = {
    "/predict": "send one record as a JSON object (its fields: the Record schema at /docs)",
    "/predict_batch": "send a JSON list of records (the Record schema at /docs)",
}


def empty_body_problem(path: str, body: bytes) -> str | None:
    """The error of an empty (or blank) body sent to an API that needs one, or None: the
    route's validation would list every missing field of the record instead."""
    advice = EMPTY_BODY_ADVICE.get(path)
    if advice is None or body.strip():
        return None
    return f"the body is empty: {advice}"


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The request's Content-Length, or None if it has none (or an unreadable one: the HTTP
    server refuses those itself)."""
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
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
