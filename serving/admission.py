"""Load shedding on the latency API: at most a budget of ``/predict`` requests in flight.

``/predict`` runs one model call at a time per worker; without a bound every extra client
waits in line, so under 400 concurrent clients everyone waited seconds (issue 10). Past the
budget (the request computing + those allowed to wait, per worker) the service answers at once
``503 {"error": ...}`` with ``Retry-After``, before reading the body and before BentoML's own
middleware (metrics, tracing, access log): a refusal costs little, and the requests it
accepts keep a bounded latency.

BentoML 1.4.39's own ``traffic={"max_concurrency": N}`` does not do this job: it limits every
route of the service together (``/predict_batch``, ``/invocations``, ``/metadata`` too), has no
queue, and answers ``429 {"error": "Too many requests"}`` without ``Retry-After``
(``bentoml/_internal/server/http/traffic.py``). ``/predict_batch`` keeps its own shedding
(the adaptive batcher's latency budget, ``TAGSERVE_MAX_LATENCY_MS``).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

SHED_STATUS = 503


class InFlight:
    """A count of admitted requests, bounded by ``budget`` (one per worker: no lock is needed,
    an ASGI worker runs its middleware on one event loop thread)."""

    def __init__(self, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"the budget must be at least 1, not {budget}")
        self.budget = budget
        self.count = 0

    def try_enter(self) -> bool:
        """Admit one more request if the budget allows it."""
        if self.count >= self.budget:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1


def shed_body(path: str, budget: int, retry_after: int) -> bytes:
    """The JSON body of a refusal: what happened and what to do."""
    message = (
        f"overloaded: {path} already has {budget} requests in flight in this worker "
        f"(TAGSERVE_PREDICT_QUEUE); retry after {retry_after} s, or send rows in bulk "
        f"to /predict_batch"
    )
    return json.dumps({"error": message}).encode()


def shed_headers(body: bytes, retry_after: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]


SHED_METRIC = "tagserve_shed_requests"  # /metrics: tagserve_shed_requests_total{endpoint}
_shed_counter: Any = None


def shed_counter() -> Any:
    """The Prometheus counter of refused requests, by endpoint; made on first use, in the
    worker (BentoML sets prometheus_client's multiprocess folder when a worker starts, after
    the service module is imported), and once per process."""
    global _shed_counter
    if _shed_counter is None:
        import prometheus_client  # BentoML's own metrics library

        _shed_counter = prometheus_client.Counter(
            SHED_METRIC,
            "Requests refused with 503 by tagserve's load shedding",
            labelnames=["endpoint"],
        )
    return _shed_counter


class LoadShedding:
    """ASGI middleware: admits at most ``budget`` concurrent requests to ``paths`` (POST);
    answers the others ``503`` with ``Retry-After: retry_after`` without waiting."""

    # Before BentoML's middleware (serving.bentoml_private.put_outermost_first): a refusal
    # must cost next to nothing, or refusing hundreds of clients starves the admitted ones.
    bentoml_outermost = True

    def __init__(self, app: Any, *, budget: int, retry_after: int, paths: Collection[str]) -> None:
        self.app = app
        self.in_flight = InFlight(budget)
        self.retry_after = retry_after
        self.paths = frozenset(paths)
        # BentoML's request metrics never see a refusal (it happens before them): count here.
        self.refused = shed_counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in self.paths
        ):
            return await self.app(scope, receive, send)
        if not self.in_flight.try_enter():
            await self.refuse(scope["path"], send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.leave()

    async def refuse(self, path: str, send: Any) -> None:
        # The unread request body is discarded by the server (uvicorn), and the connection
        # stays usable for the retry.
        self.refused.labels(endpoint=path).inc()
        body = shed_body(path, self.in_flight.budget, self.retry_after)
        headers = shed_headers(body, self.retry_after)
        await send({"type": "http.response.start", "status": SHED_STATUS, "headers": headers})
        await send({"type": "http.response.body", "body": body})
