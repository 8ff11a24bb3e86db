"""The single-request client: one record to ``POST /predict``, the answer back."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx

from clients.errors import ClientError
from clients.http import (
    RETRY_STATUSES,
    Backoff,
    Retries,
    decode,
    describe,
    error_of,
    normalize_url,
)
from clients.service import PREDICT_ROUTE, ServiceInfo, fetch_service_info
from inference.contract import parse_text


def parse_record(
    text: str | None, fields: list[str], service: ServiceInfo | None = None
) -> dict[str, Any]:
    """A record from a JSON object (``-`` reads stdin) and/or ``NAME=VALUE`` flags.

    Flag values take the type of their signature column when ``service`` is known (so
    ``year=2007`` is an integer and ``cut=1`` text), else JSON's reading of them.
    """
    record: dict[str, Any] = {}
    if text is not None:
        source = "stdin" if text == "-" else "the record"
        raw = sys.stdin.read() if text == "-" else text
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ClientError(f"{source} is not JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise ClientError(f"{source} must be a JSON object of feature values")
    types = {c.name: c.type for c in service.info.columns} if service else {}
    for item in fields:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ClientError(f"--field takes NAME=VALUE, not {item!r}")
        record[name] = typed(name, value, types.get(name))
    if not record:
        raise ClientError("give the record as JSON or as --field NAME=VALUE flags")
    return record


def typed(name: str, value: str, kind: str | None) -> Any:
    """A flag's value in its column's type (``inference.contract.parse_text``); with no known
    type, as JSON reads it (else as text)."""
    if kind is not None:
        try:
            return parse_text(kind, value)
        except ValueError as exc:
            raise ClientError(f"--field {name}: {exc}") from None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def predict_one(
    record: dict[str, Any],
    *,
    url: str,
    timeout: float = 30.0,
    retries: int = 8,
    backoff: Backoff | None = None,
) -> Any:
    """POST one record to ``/predict``; retries 503s (after the ``Retry-After`` the server
    asks for) and connection errors (with backoff), within ``backoff``'s bounds."""
    url = normalize_url(url)
    retrying = Retries(backoff or Backoff(retries=retries))
    with httpx.Client(base_url=url, timeout=timeout) as client:
        while True:
            retry_after = None
            try:
                response = client.post(PREDICT_ROUTE, json=record)
            except httpx.TransportError as exc:
                problem = f"cannot reach {url}: {describe(exc)}"
            else:
                if response.is_success:
                    return decode(response)
                problem = error_of(response)
                if response.status_code not in RETRY_STATUSES:
                    raise ClientError(f"the service refused the record: {problem}")
                retry_after = response.headers.get("retry-after")
            delay = retrying.next_delay(retry_after)
            if delay is None:
                raise ClientError(retrying.gave_up(problem))
            time.sleep(delay)


def service_for_fields(url: str, timeout: float, retries: int) -> ServiceInfo | None:
    """The served signature, to type flag values; None if /metadata cannot say."""
    try:
        return fetch_service_info(
            normalize_url(url), timeout=timeout, backoff=Backoff(retries=min(retries, 2))
        )
    except ClientError:
        return None
