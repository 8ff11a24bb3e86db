"""What the service's HTTP handlers read: one typed object per worker, made when the service
starts in it (``service.Tagserve``), and the one accessor that finds it.

BentoML hands a route mounted beside its APIs nothing but the running service; reading loose
attributes of it would fail only when a request arrives, after a rename. Every handler reads
:class:`ServiceState` through :func:`current` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import bentoml

if TYPE_CHECKING:
    from inference.contract import Contract
    from serving.model_choice import ModelChoice
    from serving.monitoring import Monitor
    from serving.schema import Metadata
    from serving.settings import Settings


@dataclass
class BatchCounts:
    """The adaptive batcher's model calls and the rows they took, in this worker."""

    model_calls: int = 0
    rows: int = 0


@dataclass(frozen=True)
class ServiceState:
    """One worker's service: what it serves, under which settings, and its background parts.

    ``revision``: the code's git commit and tag; ``candidate_meta``: the candidate model's
    metadata (None without a candidate); ``openapi_body``: the ``/docs.json`` document."""

    settings: Settings
    contract: Contract
    models: ModelChoice
    monitor: Monitor
    revision: Mapping[str, str]
    openapi_body: bytes
    candidate_meta: Mapping[str, Any] | None = None
    counts: BatchCounts = field(default_factory=BatchCounts)

    def describe(self) -> Metadata:
        """``/metadata``: the model and the code this service runs."""
        from serving.metadata import describe

        return describe(self)


def current() -> ServiceState:
    """The state of the service running in this worker.

    Raises:
        bentoml.exceptions.BentoMLException: No service runs here yet (its model is still
            loading).
    """
    return bentoml.get_current_service().state
