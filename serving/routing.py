"""The choice of a prediction request's model beside a candidate (the canary and the shadow).

**Canary** (``TAGSERVE_CANARY_PERCENT``): that share of the prediction requests is answered by
the candidate: by a stable hash of ``X-Request-Key`` when sent (a client always gets the same
model), at random otherwise. **Shadow** (``TAGSERVE_SHADOW_FRACTION``): that share of the
requests the live model answers is also scored by the candidate, off the reply path
(``serving.shadow``). ``serving.middleware.ModelRouting`` makes the choice per request, before
adaptive batching merges requests of several clients, and sets :data:`route_var`.
"""

from __future__ import annotations

import hashlib
import random
from contextvars import ContextVar

LIVE, CANDIDATE, SHADOWED = "live", "candidate", "shadowed"
REQUEST_KEY_HEADER = "x-request-key"
MODEL_HEADER = "x-tagserve-model"

# The route the current request was given (/predict, /invocations read it).
route_var: ContextVar[str] = ContextVar("tagserve_route", default=LIVE)


def canary_share(key: bytes) -> float:
    """Where ``key`` falls in [0, 100): a stable hash (the same key, the same model, in every
    worker and every run)."""
    digest = hashlib.sha256(key).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def choose(percent: float, fraction: float, key: bytes | None, rng: random.Random) -> str:
    """A request's route: the candidate answers (canary), the live model answers and the
    candidate scores it too (shadow), or the live model alone."""
    if percent > 0:
        share = canary_share(key) if key is not None else rng.random() * 100
        if share < percent:
            return CANDIDATE
    if fraction > 0 and rng.random() < fraction:
        return SHADOWED
    return LIVE
