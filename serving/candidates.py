"""A candidate model beside the live one: canary and shadow (README "Shadow and canary").

- ``TAGSERVE_CANDIDATE=<exact model tag>``: a model of the BentoML store, checked at start-up
  by the loader's trust rules and against the live model's input contract
  (:func:`check_candidate`: one readable line if refused), loaded in each worker by the same
  loader with its checked fast path, as the live model is.
- **Canary** (``TAGSERVE_CANARY_PERCENT``): that share of the prediction requests is answered
  by the candidate. :class:`ModelRouting` chooses per request, before anything else runs (so
  before adaptive batching merges requests of several clients): by a stable hash of
  ``X-Request-Key`` when sent (a client always gets the same model), at random otherwise.
  ``/predict_batch`` requests it picks are routed to hidden batchable APIs of their own
  (:data:`BATCH_ROUTES`, their own batchers, not in the OpenAPI document); ``/predict`` and
  ``/invocations`` read the choice from :data:`route_var`. Every answer of a prediction route
  carries ``X-Tagserve-Model: <tag that answered>``.
- **Shadow** (``TAGSERVE_SHADOW_FRACTION``): that share of the requests the live model
  answers is also scored by the candidate, off the reply path: :class:`Shadow` takes the rows
  and the live predictions into a bounded queue (a full queue drops the call and counts it:
  shadow work is shed first) and a daemon thread scores and compares them
  (``inference.compare``), into Prometheus metrics.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse

from inference.bento import get_model, mlflow_folder
from inference.compare import ABS_DIFF_BUCKETS, Comparison
from inference.contract import Contract
from inference.errors import ModelRefused, TagserveError
from inference.loading import check_model

logger = logging.getLogger("bentoml.service.tagserve")

LIVE, CANDIDATE, SHADOWED = "live", "candidate", "shadowed"
# The hidden batchable APIs /predict_batch requests are routed to (not reachable from outside).
HIDDEN_PREFIX = "/_tagserve/"
BATCH_ROUTES = {
    CANDIDATE: f"{HIDDEN_PREFIX}predict_batch_candidate",
    SHADOWED: f"{HIDDEN_PREFIX}predict_batch_shadowed",
}
PREDICTION_PATHS = frozenset({"/predict", "/predict_batch", "/invocations"})
REQUEST_KEY_HEADER = "x-request-key"
MODEL_HEADER = "x-tagserve-model"
# The shadow calls one worker may hold waiting for the candidate; past it they are dropped.
SHADOW_QUEUE = 256
COMPARISON_ROWS = 100_000  # the newest rows whose |diff| percentiles /monitoring shows
# How long the shadow thread gathers calls after the first before scoring them together.
SHADOW_GATHER_S = 0.05

# The route the current request was given (/predict, /invocations read it).
route_var: ContextVar[str] = ContextVar("tagserve_route", default=LIVE)


class CandidateRefused(TagserveError):
    """A candidate that cannot be served beside the live model."""


# --- start-up checks (in the `bentoml serve` process, before any worker starts) -------------


def _signature(contract: Contract) -> list[tuple[str, str, bool]]:
    return [(c.name, c.type, c.required) for c in contract.columns]


def check_candidate(
    tag: str, live_tag: str, live: Contract, contract_of: Callable[[Any], Contract]
) -> Any:
    """The BentoML model of the candidate ``tag``, if it may be served beside the live model
    ``live_tag`` (``contract_of``: a model's contract, as the service reads it).

    Raises:
        CandidateRefused: Not an exact tag (``name:version``), not in the store, the live
            model itself, a model the loader's trust rules refuse, another task, or another
            input contract (columns, types, optional columns).
    """
    name, _, version = tag.partition(":")
    where = f"TAGSERVE_CANDIDATE={tag!r}"
    if not name or version in ("", "latest"):
        raise CandidateRefused(
            f"{where}: a candidate is named by its exact tag (name:version, as `bentoml "
            "models list` shows it), never by name or name:latest"
        )
    try:
        model = get_model(tag)
        check_model(mlflow_folder(model))
    except ModelRefused as exc:
        raise CandidateRefused(f"{where} is refused: {exc}") from None
    except TagserveError as exc:
        raise CandidateRefused(f"{where}: {exc}") from None
    if str(model.tag) == live_tag:
        raise CandidateRefused(f"{where} is the live model itself")
    contract = contract_of(model)
    if contract.task != live.task:
        raise CandidateRefused(
            f"{where} is a {contract.task} model; the live model {live_tag} is a {live.task} one"
        )
    want, got = _signature(live), _signature(contract)
    if got != want:
        missing = [f"{n} ({t})" for n, t, _ in want if (n, t) not in {(a, b) for a, b, _ in got}]
        extra = [f"{n} ({t})" for n, t, _ in got if (n, t) not in {(a, b) for a, b, _ in want}]
        detail = "; ".join(
            part
            for part in (
                f"the live model's {', '.join(missing)} missing or of another type"
                if missing
                else "",
                f"not taken by the live model: {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise CandidateRefused(
            f"{where} takes other input than the live model {live_tag}: "
            f"{detail or 'columns in another order or with other required flags'}"
        )
    return model


# --- the choice of a request's model -------------------------------------------------------------


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


class ModelRouting:
    """ASGI middleware: the route of each prediction request (:func:`choose`), the hidden
    ``/predict_batch`` API it goes to, and ``X-Tagserve-Model`` on its answer."""

    bentoml_outermost = True  # before BentoML's router sees the path

    def __init__(
        self, app: Any, *, live: str, candidate: str = "", percent: float, fraction: float
    ) -> None:
        self.app = app
        self.tags = {LIVE: live, SHADOWED: live, CANDIDATE: candidate}
        self.percent = percent if candidate else 0.0
        self.fraction = fraction if candidate else 0.0
        self.rng = random.Random()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path.startswith(HIDDEN_PREFIX):
            return await _not_found(scope, receive, send)
        if path not in PREDICTION_PATHS:
            return await self.app(scope, receive, send)
        route = LIVE
        if self.percent or self.fraction:
            key = Headers(scope=scope).get(REQUEST_KEY_HEADER)
            route = choose(self.percent, self.fraction, key and key.encode(), self.rng)
        if path == "/predict_batch" and route in BATCH_ROUTES:
            scope = {**scope, "path": BATCH_ROUTES[route], "raw_path": BATCH_ROUTES[route].encode()}
        tag = self.tags[route]

        async def tagged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers") or [])}
                MutableHeaders(scope=message).append(MODEL_HEADER, tag)
            await send(message)

        token = route_var.set(route)
        try:
            await self.app(scope, receive, tagged)
        finally:
            route_var.reset(token)


async def _not_found(scope: Any, receive: Any, send: Any) -> None:
    await JSONResponse({"error": "not found"}, status_code=404)(scope, receive, send)


# --- metrics -------------------------------------------------------------------------------------


class ShadowMetrics:
    """The Prometheus metrics of the shadow and of each model's latency. Made in the worker
    (BentoML sets prometheus_client's multiprocess folder when a worker starts), once per
    process (:func:`shadow_metrics`)."""

    def __init__(self) -> None:
        import prometheus_client as prom  # BentoML's own metrics library

        self.requests = prom.Counter(
            "tagserve_shadow_requests", "Requests the candidate scored in the shadow"
        )
        self.dropped = prom.Counter(
            "tagserve_shadow_dropped",
            "Shadow calls dropped: the queue was full (shed first) or the candidate failed",
            labelnames=["reason"],
        )
        self.rows = prom.Counter("tagserve_shadow_rows", "Rows the candidate scored in the shadow")
        self.abs_diff = prom.Histogram(
            "tagserve_shadow_abs_diff",
            "|candidate - live| per row (regressors)",
            buckets=ABS_DIFF_BUCKETS,
        )
        self.agreed = prom.Counter(
            "tagserve_shadow_agreed_rows", "Rows where the candidate predicts the live class"
        )
        self.agreement: Any = None  # made for a classifier only (agreement_of_worker)
        self.latency = prom.Histogram(
            "tagserve_model_latency_seconds",
            "Time of one model call, by model tag",
            labelnames=["model"],
        )

    def agreement_of_worker(self) -> Any:
        # A ratio cannot be summed over workers: one series per worker (pid label); the
        # service's ratio is tagserve_shadow_agreed_rows_total / tagserve_shadow_rows_total.
        if self.agreement is None:
            import prometheus_client as prom

            self.agreement = prom.Gauge(
                "tagserve_shadow_agreement_ratio",
                "This worker's share of shadow rows where the candidate agrees (classifiers)",
                multiprocess_mode="liveall",
            )
        return self.agreement


_metrics: ShadowMetrics | None = None


def shadow_metrics() -> ShadowMetrics:
    global _metrics
    if _metrics is None:
        _metrics = ShadowMetrics()
    return _metrics


# --- the shadow ----------------------------------------------------------------------------------


@dataclass
class ShadowCall:
    """One request to score with the candidate: its rows (records, or a frame) and the live
    model's predictions of them."""

    rows: Any
    live: list[Any]


class Shadow:
    """Scores requests with the candidate off the reply path: :meth:`offer` never waits (a
    full queue drops the call and counts it); a daemon thread does the scoring."""

    def __init__(
        self,
        score: Callable[[Any], Sequence[Any]],
        task: str,
        metrics: ShadowMetrics,
        *,
        tag: str,
        maxsize: int = SHADOW_QUEUE,
        gather_s: float = SHADOW_GATHER_S,
    ) -> None:
        self.score = score
        self.gather_s = gather_s
        self.metrics = metrics
        self.tag = tag
        # Bounded: the percentiles of the newest rows, running totals of all (inference.compare)
        self.comparison = Comparison(task, keep=COMPARISON_ROWS)
        self.calls: queue.Queue[ShadowCall] = queue.Queue(maxsize=maxsize)
        self.offered = self.dropped = self.scored = 0
        self.thread = threading.Thread(target=self._run, name="tagserve-shadow", daemon=True)
        self.thread.start()

    def offer(self, rows: Any, live: Sequence[Any]) -> bool:
        """Queue ``rows`` (and the live predictions) for the candidate; False if dropped."""
        self.offered += 1
        try:
            self.calls.put_nowait(ShadowCall(rows, list(live)))
        except queue.Full:
            self.dropped += 1
            self.metrics.dropped.labels(reason="queue_full").inc()
            return False
        return True

    def _run(self) -> None:
        while True:
            calls = [self.calls.get()]
            # Gather what arrives meanwhile: one wake-up and one candidate call for many
            # requests, not a GIL hand-over per request (which slowed the live event loop).
            time.sleep(self.gather_s)
            with contextlib.suppress(queue.Empty):
                while len(calls) < self.calls.maxsize:
                    calls.append(self.calls.get_nowait())
            try:
                self._score_all(calls)
            finally:
                for _ in calls:
                    self.calls.task_done()

    def _score_all(self, calls: list[ShadowCall]) -> None:
        merged = [c for c in calls if isinstance(c.rows, list)]  # records: one call for all
        groups = [merged] if merged else []
        groups += [[c] for c in calls if not isinstance(c.rows, list)]  # frames: one each
        for group in groups:
            try:
                self._score(group)
            except Exception:  # the group again call by call: a failing call fails alone
                if len(group) == 1:
                    self._failed(group[0])
                    continue
                for call in group:
                    try:
                        self._score([call])
                    except Exception:
                        self._failed(call)

    def _failed(self, call: ShadowCall) -> None:
        # A shadow failure never reaches a client: counted and logged.
        self.dropped += 1
        self.metrics.dropped.labels(reason="candidate_failed").inc()
        logger.exception("shadow: the candidate %s failed", self.tag)

    def _score(self, calls: list[ShadowCall]) -> None:
        rows = calls[0].rows if len(calls) == 1 else [r for c in calls for r in c.rows]
        live = [p for c in calls for p in c.live]
        began = time.perf_counter()
        predicted = self.score(rows)
        self.metrics.latency.labels(model=self.tag).observe(time.perf_counter() - began)
        per_row = self.comparison.add(live, predicted)
        m = self.metrics
        m.requests.inc(len(calls))
        m.rows.inc(len(per_row))
        if self.comparison.task == "classification":
            m.agreed.inc(int(per_row.sum()))
            m.agreement_of_worker().set(self.comparison.agreed / self.comparison.rows)
        else:
            for diff in per_row:
                m.abs_diff.observe(float(diff))
        self.scored += len(calls)

    def wait(self, timeout: float = 30.0) -> bool:
        """Until every queued call is scored (tests, shutdown); False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.calls.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


# --- what the service predicts with ---------------------------------------------------------------


def _predictions(answers: Sequence[Mapping[str, Any]]) -> list[Any]:
    return [a["prediction"] for a in answers]


class ModelChoice:
    """The live model, and the candidate when there is one: every prediction route predicts
    through :meth:`answer_records` (records) or :meth:`predict` (a frame), on the route the
    request was given (:data:`route_var`, or ``route``)."""

    def __init__(
        self,
        live: Any,
        live_tag: str,
        candidate: Any = None,
        candidate_tag: str = "",
        *,
        shadow_fraction: float = 0.0,
    ) -> None:
        self.live, self.live_tag = live, live_tag
        self.candidate, self.candidate_tag = candidate, candidate_tag
        self.metrics = shadow_metrics() if candidate is not None else None
        self.shadow: Shadow | None = None
        if candidate is not None and shadow_fraction > 0:
            self.shadow = Shadow(self._candidate_scores, live.task, self.metrics, tag=candidate_tag)

    def comparison(self) -> dict[str, Any] | None:
        """``/monitoring``'s ``candidate`` section: the candidate's shadow comparison with the
        live model in this worker (each worker shadows its own requests; ``/metrics`` sums
        them over workers), or None without a candidate."""
        if self.candidate is None:
            return None
        out: dict[str, Any] = {"model": self.candidate_tag, "live": self.live_tag}
        if self.shadow is None:
            return {**out, "shadow": None, "reason": "not shadowing (TAGSERVE_SHADOW_FRACTION 0)"}
        shadow = self.shadow
        return {
            **out,
            "scope": "this worker",
            "shadow": {
                "calls_offered": shadow.offered,
                "calls_scored": shadow.scored,
                "calls_dropped": shadow.dropped,
                **shadow.comparison.figures(),
            },
        }

    def _candidate_scores(self, rows: Any) -> list[Any]:
        if isinstance(rows, list):
            return _predictions(self.candidate.answer_records(rows))
        return list(self.candidate.predict(rows))

    def _timed(self, model: Any, tag: str, call: Callable[[], Any]) -> Any:
        if self.metrics is None:
            return call()
        began = time.perf_counter()
        out = call()
        self.metrics.latency.labels(model=tag).observe(time.perf_counter() - began)
        return out

    def answer_records(
        self, rows: list[dict[str, Any]], route: str | None = None
    ) -> list[dict[str, Any]]:
        route = route or route_var.get()
        if route == CANDIDATE and self.candidate is not None:
            model, tag = self.candidate, self.candidate_tag
            return self._timed(model, tag, lambda: model.answer_records(rows))
        answers = self._timed(self.live, self.live_tag, lambda: self.live.answer_records(rows))
        if route == SHADOWED and self.shadow is not None:
            self.shadow.offer(rows, _predictions(answers))
        return answers

    def predict(self, frame: Any, route: str | None = None) -> Any:
        route = route or route_var.get()
        if route == CANDIDATE and self.candidate is not None:
            model, tag = self.candidate, self.candidate_tag
            return self._timed(model, tag, lambda: model.predict(frame))
        predicted = self._timed(self.live, self.live_tag, lambda: self.live.predict(frame))
        if route == SHADOWED and self.shadow is not None:
            self.shadow.offer(frame, list(predicted))
        return predicted


def describe_candidate(
    model: Any, loaded: Any, meta: Mapping[str, Any], *, canary: float, shadow: float
) -> dict[str, Any]:
    """``/metadata``'s ``candidate``: tag, lineage, fast path, and its share of traffic."""
    from inference.constants import FASTPATH_METADATA

    keys = ("artifact", "source_ref", "version", "digest", "run_id", "git_commit", "metrics")
    return {
        "model": str(model.tag),
        **{k: meta.get(k) for k in keys},
        "engine": loaded.engine,
        "fast_path": {"import": meta.get(FASTPATH_METADATA) or {}, "startup": loaded.fast_report},
        "canary_percent": canary,
        "shadow_fraction": shadow,
    }


def candidate_folder(model: Any) -> Path:
    return mlflow_folder(model)
