"""What the HTTP clients share: the service's routes, retries with backoff, readable errors."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from clients.errors import ClientError

# Load shedding and restarts: worth another try after a pause. Anything else is an answer.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MIN_PAUSE = 0.01  # seconds: less wait left than this is none


@dataclass(frozen=True)
class Backoff:
    """Bounded retries: ``retries`` more attempts, at most ``max_wait`` seconds of waiting in
    all; exponential delays with jitter, or what the server asks for (``Retry-After``)."""

    retries: int = 8
    base: float = 0.25
    cap: float = 8.0
    max_wait: float = 60.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): at least what
        ``Retry-After`` asks (plus a little jitter, so that the clients a server shed together
        do not all come back at the same instant), else exponential backoff."""
        asked = retry_after_seconds(retry_after)
        if asked is not None:
            return asked + random.uniform(0, self.base)
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter": spread, never zero


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """The seconds a ``Retry-After`` header asks for (delay-seconds or an HTTP date, RFC 9110
    10.2.3); None when absent or unreadable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Retries:
    """The retries of one request: counts them and the time waited, and says when to stop."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.attempt = 0
        self.waited = 0.0

    def next_delay(self, retry_after: str | None = None) -> float | None:
        """Seconds to wait before the next attempt, or None when the retries are spent or
        the wait would pass ``max_wait`` (a server asking for longer is not waited for)."""
        remaining = self.backoff.max_wait - self.waited
        if self.attempt >= self.backoff.retries or remaining < MIN_PAUSE:
            return None
        delay = self.backoff.delay(self.attempt + 1, retry_after)
        if delay > remaining:
            if retry_after_seconds(retry_after) is not None:
                return None
            delay = remaining  # our own backoff is trimmed to the bound, never skipped
        self.attempt += 1
        self.waited += delay
        return delay

    def gave_up(self, problem: str) -> str:
        """The one-line reason for giving up after ``problem``."""
        return f"{problem} (gave up after {self.attempt} retries, {self.waited:.1f} s waited)"


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
