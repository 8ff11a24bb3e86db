"""Offline comparison of a candidate with the live model (``python -m clients compare``):
both score the same file, in chunks, as ``clients score`` does; the agreement figures are
those the service's shadow exports (``inference.compare``), for a decision before shadowing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.errors import ClientError
from clients.io import iter_chunks
from clients.model import ModelInfo, OfflineModel
from clients.offline import DEFAULT_CHUNK_SIZE
from inference.compare import Comparison


@dataclass
class CompareSummary:
    model: str
    candidate: str
    comparison: Comparison
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "candidate": self.candidate,
            **self.comparison.figures(),
            "seconds": round(self.seconds, 3),
        }

    def line(self) -> str:
        return f"{self.candidate} against {self.model}: {self.comparison.line()}"


def _signature(info: ModelInfo) -> list[tuple[str, str]]:
    return [(c.name, c.type) for c in info.columns]


def compare_file(
    input: str | Path,
    live: ModelInfo,
    candidate: ModelInfo,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> CompareSummary:
    """Score ``input`` with the live model and the candidate; their agreement figures."""
    if live.task != candidate.task:
        raise ClientError(
            f"the candidate {candidate.ref} is a {candidate.task} model, "
            f"the model {live.ref} a {live.task} one"
        )
    if _signature(live) != _signature(candidate):
        raise ClientError(
            f"the candidate {candidate.ref} takes other input columns than the model {live.ref}"
        )
    began = time.perf_counter()
    comparison = Comparison(live.task)
    live_model, candidate_model = OfflineModel(live), OfflineModel(candidate)
    for chunk in iter_chunks(input, chunk_size, columns=live.features, dtypes=live.dtypes):
        comparison.add(live_model.predict(chunk), candidate_model.predict(chunk))
    if not comparison.rows:
        raise ClientError(f"{input} holds no rows to compare")
    seconds = time.perf_counter() - began
    return CompareSummary(live.ref, candidate.ref, comparison, seconds)
