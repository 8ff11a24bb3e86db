"""Load shedding on the latency API: at most a budget of ``/predict`` requests in flight.

``/predict`` runs one model call at a time per worker; without a bound every extra client
waits in line, so under many concurrent clients everyone waits in line for seconds. Past the
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


def shed_message(path: str, budget: int, retry_after: int) -> str:
    """The error of a refusal: what happened and what to do."""
    return (
        f"overloaded: {path} already has {budget} requests in flight in this worker "
        f"(TAGSERVE_PREDICT_QUEUE); retry after {retry_after} s, or send rows in bulk "
        f"to /predict_batch"
    )
