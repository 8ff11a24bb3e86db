"""The shadow: requests the live model answered, scored by the candidate off the reply path.

:meth:`Shadow.offer` takes the rows and the live predictions into a bounded queue and never
waits (a full queue drops the call and counts it: shadow work is shed first); a daemon thread
scores them with the candidate and compares (``inference.compare``), into Prometheus metrics
(``serving.metrics.ShadowMetrics``).

Each worker shadows its own requests; ``/monitoring`` shows the whole service's comparison
whichever worker answers. So, as the monitoring windows are, each worker's comparison is
shared through the service's monitoring folder: the thread writes it (``shadow-<pid>.npz``,
a temporary file renamed into place, at most every ``SHARE_S`` seconds while there is work)
and :func:`service_comparison` merges every worker's file on read. A file keeps counting
after its worker died (its rows were shadowed); one written by another server (another
parent process, in a reused ``TAGSERVE_MONITOR_DIR``) or for other models is left out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.compare import Comparison
from inference.files import write_atomically
from serving.batching import RecordFailed, predict_each
from serving.metrics import ShadowMetrics

logger = logging.getLogger("bentoml.service.tagserve")

# The shadow calls one worker may hold waiting for the candidate; past it they are dropped.
SHADOW_QUEUE = 256
COMPARISON_ROWS = 100_000  # the newest rows whose |diff| percentiles /monitoring shows
# How long the shadow thread gathers calls after the first before scoring them together.
SHADOW_GATHER_S = 0.05
SHARE_S = 1.0  # how often a worker with new shadow work rewrites its file
SHADOW_PREFIX = "shadow-"
COUNTERS = ("offered", "scored", "dropped")


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
        live_tag: str = "",
        folder: Path | None = None,
        maxsize: int = SHADOW_QUEUE,
        gather_s: float = SHADOW_GATHER_S,
    ) -> None:
        self.score = score
        self.gather_s = gather_s
        self.metrics = metrics
        self.tag, self.live_tag = tag, live_tag
        self.folder = folder  # the service's monitoring folder (None: not shared)
        self.shared_at = 0.0  # when this worker's file was last written
        self.changed = False  # work not in the file yet
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
            self.changed = True
            self.metrics.dropped.labels(reason="queue_full").inc()
            return False
        return True

    def _run(self) -> None:
        while True:
            try:
                calls = [self.calls.get(timeout=SHARE_S)]
            except queue.Empty:  # idle: publish what the last busy second left unwritten
                self._share(force=True)
                continue
            # Gather what arrives meanwhile: one wake-up and one candidate call for many
            # requests, not a GIL hand-over per request (which slowed the live event loop).
            time.sleep(self.gather_s)
            with contextlib.suppress(queue.Empty):
                while len(calls) < self.calls.maxsize:
                    calls.append(self.calls.get_nowait())
            try:
                self._score_all(calls)
            finally:
                self._share()
                for _ in calls:
                    self.calls.task_done()

    def _share(self, *, force: bool = False) -> None:
        """Write this worker's comparison for the others, when it changed (and, unless
        ``force``, at most every ``SHARE_S``); never raises (the shadow keeps going)."""
        if self.folder is None or not self.changed:
            return
        if not force and time.monotonic() - self.shared_at < SHARE_S:
            return
        self.changed = False
        self.shared_at = time.monotonic()
        arrays = {
            **self.comparison.arrays(),
            "counters": np.array([self.offered, self.scored, self.dropped], dtype=np.int64),
            "server": np.array([os.getppid()], dtype=np.int64),
            "models": np.array([self.live_tag, self.tag]),
        }
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{SHADOW_PREFIX}{os.getpid()}.npz"
            write_atomically(path, lambda out: np.savez(out, **arrays))
        except OSError:
            self.changed = True
            logger.warning("shadow: cannot share the comparison in %s", self.folder, exc_info=True)

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
        self.changed = True
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
            m.agreement.set(self.comparison.agreed / self.comparison.rows)
        else:
            for diff in per_row:
                m.abs_diff.observe(float(diff))
        self.scored += len(calls)
        self.changed = True
        return [None] * len(calls)

    def wait(self, timeout: float = 30.0) -> bool:
        """Until every queued call is scored (tests, shutdown); False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.calls.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


def service_comparison(
    folder: Path, task: str, live_tag: str, candidate_tag: str
) -> dict[str, Any] | None:
    """The shadow comparison of every worker of this server (their files in ``folder``,
    merged): the calls offered, scored and dropped, the comparison's figures and how many
    workers' files it covers; None when no worker has written one yet."""
    parts, counters = [], np.zeros(len(COUNTERS), dtype=np.int64)
    for path in sorted(folder.glob(f"{SHADOW_PREFIX}*.npz")):
        with contextlib.suppress(OSError, ValueError, KeyError):
            with np.load(path, allow_pickle=False) as npz:
                part = {k: npz[k] for k in npz.files}
            if int(part["server"][0]) != os.getppid():
                continue  # another server's, in a reused folder
            if [str(m) for m in part["models"]] != [live_tag, candidate_tag]:
                continue
            parts.append(part)
            counters += part["counters"]
    if not parts:
        return None
    figures = Comparison.merged(task, parts).figures()
    calls = {f"calls_{name}": int(n) for name, n in zip(COUNTERS, counters, strict=True)}
    return {**calls, **figures, "workers": len(parts)}
