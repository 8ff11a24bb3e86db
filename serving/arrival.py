"""A request's arrival: its body read under a deadline, the client that leaves noticed at once,
and what went wrong logged once per interval rather than once per request.

uvicorn (h11) hands a request to the app once its headers are complete, then its body in
messages as it arrives; it puts no time limit on either. Its headers are bounded in size
(``h11_max_incomplete_event_size``, 16 KiB) and hold no admission slot while they arrive: a
connection sending headers slowly costs a socket only (a proxy in front bounds their time:
HAProxy's ``timeout http-request``, nginx's ``client_header_timeout``). The body is read here,
whole, before BentoML's middleware and the route see the request: past
``TAGSERVE_REQUEST_READ_SECONDS`` from its headers the request gets a 408 and its slot is
freed, as nginx's ``client_body_timeout`` and HAProxy's ``timeout http-request`` do.

A client that hangs up is seen as uvicorn's ``http.disconnect`` message: while its body
arrives, by :func:`read_body`; later (its request waits in line or in an adaptive batch), by
a watch on the next message (``serving.middleware.LoadShedding``), which cancels the request
as Envoy does when its downstream disconnects.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("bentoml.service.tagserve")

ARRIVED, TIMED_OUT, GONE, TOO_LARGE = "arrived", "timed out", "gone", "too large"


@dataclass(frozen=True)
class Arrival:
    """How reading a body ended (``outcome``: one of the names above) and the body read."""

    outcome: str
    body: bytes = b""


async def read_body(
    receive: Callable[[], Awaitable[dict[str, Any]]], *, seconds: float, max_bytes: int | None
) -> Arrival:
    """The request's whole body from the ASGI ``receive``, if it arrives within ``seconds``,
    is not larger than ``max_bytes`` (None: no cap) and its client does not leave first."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return Arrival(GONE)
                chunk = message.get("body", b"")
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    return Arrival(TOO_LARGE)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return Arrival(ARRIVED, b"".join(chunks))
    except TimeoutError:
        return Arrival(TIMED_OUT)


# How a kind of event reads in the log line, by the outcome it counts.
PHRASES = {
    TIMED_OUT: "timed out while arriving",
    GONE: "were abandoned by their client",
    "refused receiving": "were refused while sending their body slowly",
}


class IntervalLog:
    """Counts events by (kind, endpoint) and logs each pair's count in one line per
    ``seconds``: the first event of a quiet period schedules the line, later ones only
    count. Call :meth:`add` on the event loop."""

    def __init__(self, seconds: float = 10.0, log: Callable[[str], None] | None = None) -> None:
        self.seconds = seconds
        self.log = log or logger.warning
        self.counts: Counter[tuple[str, str]] = Counter()
        self.scheduled = False

    def add(self, kind: str, endpoint: str) -> None:
        self.counts[kind, endpoint] += 1
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_later(self.seconds, self.flush)

    def flush(self) -> list[str]:
        """Log (and return) one line per counted pair, and start counting afresh."""
        lines = [
            f"{n} request(s) {PHRASES.get(kind, kind)} on {endpoint} in the last {self.seconds:g} s"
            for (kind, endpoint), n in sorted(self.counts.items())
        ]
        self.counts.clear()
        self.scheduled = False
        for line in lines:
            self.log(line)
        return lines
