"""The shadow: requests the live model answered, scored by the candidate off the reply path.

:meth:`Shadow.offer` takes the rows and the live predictions into a bounded queue and never
waits (a full queue drops the call and counts it: shadow work is shed first); a daemon thread
scores them with the candidate and compares (``inference.compare``), into Prometheus metrics
(``serving.metrics.ShadowMetrics``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inference.compare import Comparison
from serving.batching import RecordFailed, predict_each
from serving.metrics import ShadowMetrics

logger = logging.getLogger("bentoml.service.tagserve")

# The shadow calls one worker may hold waiting for the candidate; past it they are dropped.
SHADOW_QUEUE = 256
COMPARISON_ROWS = 100_000  # the newest rows whose |diff| percentiles /monitoring shows
# How long the shadow thread gathers calls after the first before scoring them together.
SHADOW_GATHER_S = 0.05


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
        """Records of every call in one group, a frame alone: a group that fails is split by
        ``serving.batching.predict_each``, so a failing call fails alone."""
        merged = [c for c in calls if isinstance(c.rows, list)]
        groups = [merged] if merged else []
        groups += [[c] for c in calls if not isinstance(c.rows, list)]
        for group in groups:
            for call, outcome in zip(group, predict_each(group, self._score), strict=True):
                if isinstance(outcome, RecordFailed):
                    self._failed(call, outcome)

    def _failed(self, call: ShadowCall, failure: RecordFailed) -> None:
        # A shadow failure never reaches a client: counted and logged.
        self.dropped += 1
        self.metrics.dropped.labels(reason="candidate_failed").inc()
        logger.error("shadow: the candidate %s failed", self.tag, exc_info=failure.error)

    def _score(self, calls: Sequence[ShadowCall]) -> list[None]:
        """Score ``calls`` in one candidate call; one None per call scored."""
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
        return [None] * len(calls)

    def wait(self, timeout: float = 30.0) -> bool:
        """Until every queued call is scored (tests, shutdown); False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.calls.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True
