"""Admission: a budget of requests in flight per worker and prediction route, and a bounded
share of it for requests still receiving their body.

``/predict`` runs one model call at a time per worker; without a bound every extra client
waits in line, so under many concurrent clients everyone waits in line for seconds. Past the
budget (the request computing + those allowed to wait, per worker) the service answers at once
``503 {"error": ...}`` with ``Retry-After``, before reading the body and before BentoML's own
middleware (metrics, tracing, access log): a refusal costs little, and the requests it
accepts keep a bounded latency. ``/predict_batch`` and ``/invocations`` have a budget each of
the same kind (``TAGSERVE_BULK_QUEUE``); ``/predict_batch`` also keeps the adaptive batcher's
own shedding (its latency budget, ``TAGSERVE_MAX_LATENCY_MS``).

A slot is taken before the body is read, so a client that sends its body slowly holds one.
At most half the budget (:attr:`InFlight.receiving_limit`) may be receiving at once: the rest
is always left to requests whose bodies have arrived. A request that finds that share full is
not admitted while it receives; it gets a short grace to finish its body, then 503
(``serving.arrival`` reads bodies, under ``TAGSERVE_REQUEST_READ_SECONDS``).

BentoML 1.4.39's own ``traffic={"max_concurrency": N}`` does not do this job: it limits every
route of the service together (``/metadata`` too), has no queue, and answers
``429 {"error": "Too many requests"}`` without ``Retry-After``
(``bentoml/_internal/server/http/traffic.py``).
"""

from __future__ import annotations


class InFlight:
    """A count of admitted requests, bounded by ``budget``, and of those among them still
    receiving their body, bounded by ``receiving_limit`` (half the budget, at least one). One
    per worker and route: no lock is needed, an ASGI worker runs its middleware on one event
    loop thread."""

    def __init__(self, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"the budget must be at least 1, not {budget}")
        self.budget = budget
        self.receiving_limit = max(1, budget // 2)
        self.count = 0
        self.receiving = 0

    @property
    def full(self) -> bool:
        return self.count >= self.budget

    @property
    def may_receive(self) -> bool:
        """Whether one more admitted request may still be receiving its body."""
        return self.receiving < self.receiving_limit and not self.full

    def try_enter(self, *, receiving: bool = False) -> bool:
        """Admit one more request if the budget (and, for a request still ``receiving`` its
        body, the receiving share) allows it."""
        if self.full or (receiving and not self.may_receive):
            return False
        self.count += 1
        self.receiving += receiving
        return True

    def arrived(self) -> None:
        """An admitted request that was receiving has its body (or is gone)."""
        if self.receiving < 1:
            raise RuntimeError("no admitted request is receiving")
        self.receiving -= 1

    def leave(self) -> None:
        if self.count < 1:
            raise RuntimeError("no request was admitted")
        self.count -= 1


def shed_message(path: str, budget: int, retry_after: int, setting: str) -> str:
    """The error of a refusal: what happened and what to do."""
    advice = " or send rows in bulk to /predict_batch" if path == "/predict" else ""
    return (
        f"overloaded: {path} already has {budget} requests in flight in this worker "
        f"({setting}); retry after {retry_after} s{',' if advice else ''}{advice}"
    )


def receiving_message(path: str, limit: int, retry_after: int) -> str:
    """The error of a request refused because too many are still receiving their body."""
    return (
        f"overloaded: {path} already has {limit} requests still sending their body in this "
        f"worker; send the whole body at once, retry after {retry_after} s"
    )
