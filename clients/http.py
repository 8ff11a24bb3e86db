"""What the HTTP clients share: the service's routes, retries with backoff, readable errors."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import httpx

from clients.errors import ClientError

# Load shedding and restarts: worth another try after a pause. Anything else is an answer.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Backoff:
    """Bounded retries: ``retries`` more attempts, exponential delays with jitter."""

    retries: int = 8
    base: float = 0.25
    cap: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if retry_after:
            try:
                return min(self.cap, max(0.0, float(retry_after)))
            except ValueError:
                pass
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter": spread, never zero


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ClientError(f"bad --url {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ClientError(f"bad --url {url!r}: expected http://host:port")
    return url


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_of(response: httpx.Response) -> str:
    """A short, readable reason from an error response (BentoML answers JSON or text)."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if key in body:
                text = body[key] if isinstance(body[key], str) else json.dumps(body[key])
                break
    text = " ".join(str(text).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


def decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ClientError(f"the service answered something that is not JSON: {exc}") from exc
