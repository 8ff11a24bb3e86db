"""What every prediction route predicts with: the live model, or the candidate beside it, on
the route the request was given (``serving.routing``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference.compare import Comparison
from serving.metrics import ShadowMetrics, shadow_metrics
from serving.routing import CANDIDATE, SHADOWED, route_var
from serving.shadow import Shadow, service_comparison


def _values(predicted: Sequence[Mapping[str, Any]]) -> list[Any]:
    return [p["prediction"] for p in predicted]


class ModelChoice:
    """The live model, and the candidate when there is one: every prediction route predicts
    through :meth:`predict_records` (records), :meth:`predict_frame` (a frame) or
    :meth:`predict_arrays` (a frame's predictions and probabilities), on the route the request
    was given (:data:`serving.routing.route_var`, or ``route``)."""

    def __init__(
        self,
        live: Any,
        live_tag: str,
        candidate: Any = None,
        candidate_tag: str = "",
        *,
        shadow_fraction: float = 0.0,
        share_folder: Path | None = None,
    ) -> None:
        self.live, self.live_tag = live, live_tag
        self.candidate, self.candidate_tag = candidate, candidate_tag
        self.metrics: ShadowMetrics | None = (
            shadow_metrics(live.task) if candidate is not None else None
        )
        self.shadow: Shadow | None = None
        if self.metrics is not None and shadow_fraction > 0:
            self.shadow = Shadow(
                self.candidate_predictions,
                live.task,
                self.metrics,
                tag=candidate_tag,
                live_tag=live_tag,
                folder=share_folder,
            )

    def comparison(self) -> dict[str, Any] | None:
        """``/monitoring``'s ``candidate`` section: the candidate's shadow comparison with the
        live model over the whole service (every worker's, shared through the monitoring
        folder: ``serving.shadow``), or None without a candidate."""
        if self.candidate is None:
            return None
        out: dict[str, Any] = {"model": self.candidate_tag, "live": self.live_tag}
        if self.shadow is None:
            return {**out, "shadow": None, "reason": "not shadowing (TAGSERVE_SHADOW_FRACTION 0)"}
        shadow = self.shadow
        if shadow.folder is None:  # nowhere to share: this worker's own figures
            own = {"calls_offered": shadow.offered, "calls_scored": shadow.scored}
            own |= {"calls_dropped": shadow.dropped, **shadow.comparison.figures()}
            return {**out, "scope": "this worker", "shadow": own}
        task = shadow.comparison.task
        figures = service_comparison(shadow.folder, task, self.live_tag, self.candidate_tag)
        if figures is None:  # no worker has scored anything yet
            figures = {"calls_offered": 0, "calls_scored": 0, "calls_dropped": 0}
            figures |= {**Comparison(task).figures(), "workers": 0}
        return {**out, "scope": "service", "shadow": figures}

    def candidate_predictions(self, rows: Any) -> list[Any]:
        """The candidate's predictions of ``rows`` (records, or a frame): the shadow's."""
        if isinstance(rows, list):
            return _values(self.candidate.predict_records(rows))
        return list(self.candidate.predict(rows))

    def _timed(self, tag: str, call: Callable[[], Any]) -> Any:
        if self.metrics is None:
            return call()
        began = time.perf_counter()
        out = call()
        self.metrics.latency.labels(model=tag).observe(time.perf_counter() - began)
        return out

    def predict_records(
        self, rows: list[dict[str, Any]], route: str | None = None
    ) -> list[dict[str, Any]]:
        """One ``{"prediction": ..., "probabilities": ...}`` per record."""
        route = route or route_var.get()
        if route == CANDIDATE and self.candidate is not None:
            model = self.candidate
            return self._timed(self.candidate_tag, lambda: model.predict_records(rows))
        predicted = self._timed(self.live_tag, lambda: self.live.predict_records(rows))
        if route == SHADOWED and self.shadow is not None:
            self.shadow.offer(rows, _values(predicted))
        return predicted

    def predict_json(self, frame: Any, route: str | None = None) -> list[dict[str, Any]]:
        """:meth:`predict_records` for a frame fitted to the contract."""
        route = route or route_var.get()
        if route == CANDIDATE and self.candidate is not None:
            model = self.candidate
            return self._timed(self.candidate_tag, lambda: model.predict_json(frame))
        predicted = self._timed(self.live_tag, lambda: self.live.predict_json(frame))
        if route == SHADOWED and self.shadow is not None:
            self.shadow.offer(frame, _values(predicted))
        return predicted

    def predict_answers(self, frame: Any, route: str | None = None) -> Any:
        """:meth:`predict_json`'s answers; a regressor's as its float64 array instead, each
        number the answer ``{"prediction": number}`` (written so by
        ``serving.batching.numbers_body``): a dict a row cost as much as the rest of a large
        request's reading and writing."""
        route = route or route_var.get()
        model = self.candidate if route == CANDIDATE and self.candidate is not None else self.live
        predicted, proba = self.predict_arrays(frame, route)
        if proba is None and predicted.ndim == 1 and predicted.dtype.kind == "f":
            return predicted.astype(np.float64, copy=False)
        return model.json_predictions(predicted, proba)

    def predict_frame(self, frame: Any, route: str | None = None) -> Any:
        """The predictions of a frame's rows, as an array."""
        return self.predict_arrays(frame, route, with_proba=False)[0]

    def predict_arrays(
        self, frame: Any, route: str | None = None, with_proba: bool = True
    ) -> tuple[Any, Any]:
        """(predictions, class probabilities or None) of a frame's rows, as arrays: the
        ``LoadedModel.predict_arrays`` of the model on the request's route."""
        route = route or route_var.get()
        if route == CANDIDATE and self.candidate is not None:
            model = self.candidate
            return self._timed(self.candidate_tag, lambda: model.predict_arrays(frame, with_proba))
        got = self._timed(self.live_tag, lambda: self.live.predict_arrays(frame, with_proba))
        if route == SHADOWED and self.shadow is not None:
            self.shadow.offer(frame, list(got[0]))
        return got
