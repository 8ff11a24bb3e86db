"""Live monitoring: the served traffic tested against the model's drift reference, with
check_data's tests (``inference.drift``), exported to Prometheus and to ``GET /monitoring``.

On the request path a route calls :meth:`Monitor.record` with the validated rows and their
predictions: one append to a bounded queue, never blocking, never raising (rows arriving while the
queue is full are dropped and counted, ``tagserve_monitor_dropped_rows_total``). Everything
else runs in one daemon thread per worker:

- every second it moves the queue into the worker's window (its newest ``window`` rows);
- every ``every_s`` seconds it writes that window to the service's shared monitoring folder
  (``window-<pid>.npz``: numbers, text and timestamps, no pickle; a temporary file renamed
  into place; touched when unchanged, so a file left for a few cycles is a dead worker's and
  is ignored; a worker with no rows yet writes an empty one, so the leader knows it lives),
  then tries to become the leader (a non-blocking ``flock`` on ``leader.lock``:
  one worker holds it while it lives, another takes over when it dies). The leader merges
  every worker's file, keeps the newest ``window`` rows of the whole service by time, tests
  them, sets the gauges and writes ``result.json`` (renamed into place), which
  ``GET /monitoring`` reads in any worker.

The leader's first test after start-up waits for every worker's file (``workers``: the
service's worker count), retrying every tick for at most a cycle and at least
``FIRST_WAIT_MIN_S``; a test that still covers fewer says so (``window.workers`` of
``window.workers_expected``, and their pids).

Each row carries which model answered it: prediction drift tests the live model's answers
only; under a canary the candidate's answers are tested apart (``candidate_prediction``).

So the gauges are one series per feature for the service whatever the worker count: only the
leader sets them, and prometheus_client's multiprocess mode ``mostrecent`` exports the newest
value written by any process (a former leader's older values lose).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import itertools
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inference import drift, strict_json
from inference.files import write_atomically
from serving.metrics import monitor_metrics
from serving.routing import CANDIDATE, route_var

logger = logging.getLogger("bentoml.service.tagserve")

RESULT_FILE, LOCK_FILE, WINDOW_PREFIX = "result.json", "leader.lock", "window-"
WAITING = "waiting"  # Monitor.cycle: the first test waits for the other workers
TICK_S = 1.0  # how often the queue moves into the window
# The first test after start-up waits for every worker's window (retrying every tick) at
# most this long: a cycle, and never less than a worker may take to load its model beside
# another; then it tests what it has and says which workers it covers.
FIRST_WAIT_CYCLES, FIRST_WAIT_MIN_S = 1, 20.0
FOLDER_ENV = "PROMETHEUS_MULTIPROC_DIR"  # BentoML's per-server metrics folder, in every worker


def shared_folder(configured: str | None) -> Path:
    """The folder the service's workers share: ``TAGSERVE_MONITOR_DIR``, else one per server
    (named after the process that started the workers) in BentoML's metrics folder."""
    if configured:
        return Path(configured)
    base = os.environ.get(FOLDER_ENV) or tempfile.gettempdir()
    return Path(base) / f"tagserve-monitor-{os.getppid()}"


# --- metrics (serving.metrics.MonitorMetrics) ---------------------------------------------


def nan_if_none(value: Any) -> float:
    return float("nan") if value is None else float(value)


def export(result: Mapping[str, Any]) -> None:
    """Set the gauges from one evaluation."""
    m = monitor_metrics()
    for name, entry in result["features"].items():
        m.p_value.labels(feature=name).set(nan_if_none(entry["p_value"]))
        m.statistic.labels(feature=name).set(nan_if_none(entry["statistic"]))
        m.detected.labels(feature=name).set(1.0 if entry["detected"] else 0.0)
        m.missing.labels(feature=name).set(entry["missing_ratio"])
        if entry.get("unknown_category_ratio") is not None:
            m.unknown.labels(feature=name).set(entry["unknown_category_ratio"])
        if "out_of_range_ratio" in entry:
            m.out_of_range.labels(feature=name).set(entry["out_of_range_ratio"])
    prediction = result.get("prediction")
    if prediction:
        m.prediction_p.set(nan_if_none(prediction["p_value"]))
        m.prediction_statistic.set(nan_if_none(prediction["statistic"]))
        m.prediction_detected.set(1.0 if prediction["detected"] else 0.0)
    canary = result.get("candidate_prediction")
    if canary:
        m.candidate_prediction_p.set(nan_if_none(canary["p_value"]))
        m.candidate_prediction_detected.set(1.0 if canary["detected"] else 0.0)
    m.rows.set(result["rows"])
    m.evaluated.set(time.time())


# --- the window -----------------------------------------------------------------------------


def prediction_of(item: Any) -> Any:
    """The predicted value in one item of a route's predictions: a value,
    ``{"prediction": v}``, a Prediction object, or None for a record that failed."""
    if isinstance(item, Mapping):
        return item.get("prediction")
    if hasattr(item, "prediction"):
        return item.prediction
    if isinstance(item, BaseException):
        return None
    return item


def batch_columns(
    rows: Any, predictions: Any, features: Sequence[str]
) -> tuple[dict[str, list[Any]], list[Any]]:
    """One recorded batch (records or a DataFrame, and their predictions) as columns, without
    the rows whose prediction failed."""
    # The usual batches read at C speed: an array of numbers (/invocations), or one answer
    # per record (/predict_batch); a per-item Python call cost milliseconds on big requests.
    if isinstance(predictions, np.ndarray) and predictions.dtype.kind in "biuf":
        predicted = predictions.tolist()
    elif set(map(type, predictions)) == {dict}:
        predicted = list(map(dict.get, predictions, itertools.repeat("prediction")))
    else:
        predicted = [prediction_of(p) for p in predictions]
    keep = [i for i, p in enumerate(predicted) if p is not None]
    if isinstance(rows, pd.DataFrame):
        frame = rows.iloc[keep] if len(keep) != len(rows) else rows
        columns = {f: frame[f].tolist() if f in frame else [None] * len(frame) for f in features}
    else:
        kept = [rows[i] for i in keep]
        columns = {f: [r.get(f) for r in kept] for f in features}
    return columns, [predicted[i] for i in keep]


def encoded(values: list[Any], kind: str) -> dict[str, np.ndarray]:
    """A column as arrays a ``.npz`` holds without pickle: numbers (NaN: missing), or text
    and a missing mask."""
    if kind == drift.NUMBER:
        # None becomes NaN in a float array
        return {"v": np.array(values, dtype=np.float64)}
    objects = np.array(values, dtype=object)
    missing = np.asarray(pd.isna(objects), dtype=bool)
    objects[missing] = ""
    return {"v": objects.astype(str), "m": missing}


def decoded(arrays: Mapping[str, np.ndarray], kind: str) -> np.ndarray:
    if kind == drift.NUMBER:
        return arrays["v"].astype(np.float64)
    out = arrays["v"].astype(object)
    out[arrays["m"]] = None
    return out


class Window:
    """A worker's newest rows, as encoded chunks (one per tick), trimmed to ``size`` rows."""

    def __init__(self, size: int, kinds: Mapping[str, str], prediction_kind: str) -> None:
        self.size = size
        self.kinds, self.prediction_kind = dict(kinds), prediction_kind
        self.chunks: collections.deque[dict[str, np.ndarray]] = collections.deque()
        self.rows = 0
        self.changed = False

    def add(self, batches: Sequence[tuple[float, Any, Any, bool]]) -> None:
        """Encode recorded batches (time, rows, predictions, whether the candidate answered)
        into one chunk, in time order; drop the chunks the window no longer needs."""
        stamps: list[float] = []
        by_candidate: list[bool] = []
        frame_by_candidate: list[bool] = []
        records: list[Mapping[str, Any]] = []  # /predict, /predict_batch: one pass for all
        columns: dict[str, list[Any]] = {f: [] for f in self.kinds}
        predictions: list[Any] = []
        frame_stamps: list[float] = []
        frame_predictions: list[Any] = []
        for stamp, rows, batch_predictions, candidate in batches:
            if isinstance(rows, pd.DataFrame):  # /invocations, /predict_batch: a frame
                got, predicted = batch_columns(rows, batch_predictions, list(self.kinds))
                for f in self.kinds:
                    columns[f] += got[f]
                frame_predictions += predicted
                frame_stamps += [stamp] * len(predicted)
                frame_by_candidate += [candidate] * len(predicted)
                continue
            for row, item in zip(rows, batch_predictions, strict=True):
                predicted = prediction_of(item)
                if predicted is not None:  # a record that failed is not monitored
                    records.append(row)
                    predictions.append(predicted)
                    stamps.append(stamp)
                    by_candidate.append(candidate)
        for f in self.kinds:
            columns[f] = [r.get(f) for r in records] + columns[f]
        stamps += frame_stamps
        predictions += frame_predictions
        by_candidate += frame_by_candidate
        if not stamps:
            return
        order = np.argsort(np.array(stamps, dtype=np.float64), kind="stable")
        chunk = {"t": np.array(stamps, dtype=np.float64)[order]}
        chunk["c"] = np.array(by_candidate, dtype=bool)[order]
        for i, (f, kind) in enumerate(self.kinds.items()):
            for part, array in encoded(columns[f], kind).items():
                chunk[f"f{i}_{part}"] = array[order]
        for part, array in encoded(predictions, self.prediction_kind).items():
            chunk[f"p_{part}"] = array[order]
        self.chunks.append(chunk)
        self.rows += len(stamps)
        self.changed = True
        while self.chunks and self.rows - len(self.chunks[0]["t"]) >= self.size:
            self.rows -= len(self.chunks.popleft()["t"])

    def arrays(self) -> dict[str, np.ndarray]:
        """The window as named arrays (``t``: each row's time; ``c``: whether the candidate
        answered it; ``f<i>_v``/``_m``: feature i; ``p_v``/``p_m``: the prediction), its
        newest ``size`` rows; empty arrays of the same names before any row."""
        if not self.chunks:
            empty = {"t": np.array([], dtype=np.float64), "c": np.array([], dtype=bool)}
            for i, kind in enumerate(self.kinds.values()):
                for part, array in encoded([], kind).items():
                    empty[f"f{i}_{part}"] = array
            for part, array in encoded([], self.prediction_kind).items():
                empty[f"p_{part}"] = array
            return empty
        names = self.chunks[0].keys()
        return {n: np.concatenate([c[n] for c in self.chunks])[-self.size :] for n in names}


@dataclasses.dataclass
class Merged:
    """The service's window: feature columns, predictions, each row's time and whether the
    candidate answered it, oldest first; the pids of the workers whose files it merges."""

    columns: dict[str, np.ndarray]
    predictions: np.ndarray
    stamps: np.ndarray
    by_candidate: np.ndarray
    pids: list[int]


def merged(
    folder: Path, kinds: Mapping[str, str], prediction_kind: str, size: int, max_age_s: float
) -> Merged:
    """Every live worker's window file merged (a file not rewritten or touched for
    ``max_age_s`` is a dead worker's, or a former server's in a reused folder, and is left
    out): the newest ``size`` rows by time."""
    parts: list[dict[str, np.ndarray]] = []
    pids: list[int] = []
    now = time.time()
    for path in sorted(folder.glob(f"{WINDOW_PREFIX}*.npz")):
        with contextlib.suppress(OSError, ValueError, KeyError):
            if now - path.stat().st_mtime > max_age_s:
                continue
            with np.load(path) as npz:
                part = {k: npz[k] for k in npz.files}
            part.setdefault("c", np.zeros(len(part["t"]), dtype=bool))
            pid = int(path.stem[len(WINDOW_PREFIX) :])
            parts.append(part)
            pids.append(pid)
    if not parts:
        empty = np.array([])
        return Merged({f: empty for f in kinds}, empty, empty, empty.astype(bool), [])
    stamps = np.concatenate([p["t"] for p in parts])
    order = np.argsort(stamps, kind="stable")[-size:]
    columns = {}
    for i, (f, kind) in enumerate(kinds.items()):
        names = ("v", "m") if kind == drift.CATEGORY else ("v",)
        joined = {n: np.concatenate([p[f"f{i}_{n}"] for p in parts]) for n in names}
        columns[f] = decoded(joined, kind)[order]
    names = ("v", "m") if prediction_kind == drift.CATEGORY else ("v",)
    joined = {n: np.concatenate([p[f"p_{n}"] for p in parts]) for n in names}
    predictions = decoded(joined, prediction_kind)[order]
    by_candidate = np.concatenate([p["c"] for p in parts]).astype(bool)[order]
    return Merged(columns, predictions, stamps[order], by_candidate, pids)


def iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")


# --- the monitor ----------------------------------------------------------------------------


class Monitor:
    """One worker's part of the live monitoring (see the module docstring)."""

    def __init__(
        self,
        reference: drift.Reference | None,
        *,
        enabled: bool,
        reason: str = "",
        window: int = 5_000,
        min_rows: int = 500,
        every_s: float = 30.0,
        folder: Path | None = None,
        workers: int = 1,
    ) -> None:
        self.reference = reference
        self.workers = workers  # the service's worker count: the first test waits for all
        self.first_deadline: float | None = None  # set by the first test's first attempt
        self.tested_once = False
        self.enabled = enabled and reference is not None
        self.reason = reason
        self.window_size, self.min_rows, self.every_s = window, min_rows, every_s
        self.folder = folder
        self.queue: collections.deque[tuple[float, Any, Any, bool]] = collections.deque()
        self.queued_rows = 0
        self.capacity = max(window, 10_000)  # rows queued between two ticks
        # A worker rewrites or touches its window file every cycle: one older than a few
        # cycles belongs to no live worker.
        self.max_age_s = 3 * every_s + 10
        self.lock = threading.Lock()
        self.leader_fd: int | None = None
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        if reference is not None:
            self.kinds = {n: d.kind for n, d in reference.features.items()}
            self.prediction_kind = (
                reference.prediction.kind if reference.prediction else drift.NUMBER
            )
            self.window = Window(window, self.kinds, self.prediction_kind)

    @classmethod
    def for_model(cls, model_path: Path, settings: Any) -> Monitor:
        """The monitor of the BentoML model at ``model_path`` under the service ``settings``
        (``monitor``, ``monitor_window``, ``monitor_min_rows``, ``monitor_every_s``,
        ``monitor_dir``); unmonitored, with the reason, when it is off or has no reference."""
        options = {
            "window": settings.monitor_window,
            "min_rows": settings.monitor_min_rows,
            "every_s": settings.monitor_every_s,
            "workers": settings.workers,
        }
        if not settings.monitor:
            return cls(None, enabled=False, reason="turned off (TAGSERVE_MONITOR=off)", **options)
        folder = model_path / drift.MONITORING_FOLDER
        if not (folder / drift.REFERENCE_JSON).is_file():
            reason = "the model was imported without a drift reference"
            with contextlib.suppress(Exception):
                import yaml

                info = yaml.safe_load((model_path / "model.yaml").read_text())
                why = ((info.get("metadata") or {}).get("monitoring") or {}).get("reason")
                reason = f"{reason}: {why}" if why else reason
            return cls(None, enabled=False, reason=reason, **options)
        try:
            reference = drift.Reference.load(folder)
        except (OSError, ValueError, KeyError) as exc:
            return cls(None, enabled=False, reason=f"unreadable drift reference: {exc}", **options)
        return cls(
            reference,
            enabled=True,
            folder=shared_folder(settings.monitor_dir),
            **options,
        )

    # -- the request path ------------------------------------------------------------------

    def record(self, rows: Any, predictions: Any, route: str | None = None) -> None:
        """Queue validated ``rows`` (records or a DataFrame) and their ``predictions``
        (prediction objects, or the values) for the window; ``route``: the model route that
        answered them (``serving.routing``; default: the request's). Never blocks on work,
        never raises."""
        if not self.enabled:
            return
        try:
            n = len(rows)
            candidate = (route or route_var.get()) == CANDIDATE
            with self.lock:
                full = self.queued_rows + n > self.capacity
                if not full:
                    self.queued_rows += n
                    self.queue.append((time.time(), rows, predictions, candidate))
            if full:
                monitor_metrics().dropped.inc(n)
        except Exception:  # monitoring must never fail a request
            logger.debug("monitoring: a batch was not recorded", exc_info=True)

    # -- the background thread -------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or self.thread is not None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # serve anyway, unmonitored, and say why
            self.enabled = False
            self.reason = f"cannot write the workers' shared folder {self.folder}: {exc}"
            logger.warning("monitoring off: %s", self.reason)
            return
        monitor_metrics()  # the series exist from the start
        self.thread = threading.Thread(target=self.run, name="tagserve-monitor", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        next_cycle = time.monotonic() + self.every_s
        while not self.stopping.wait(min(TICK_S, self.every_s)):
            try:
                self.collect()
                if time.monotonic() >= next_cycle:
                    waiting = self.cycle() == WAITING
                    next_cycle = time.monotonic() + (TICK_S if waiting else self.every_s)
            except Exception:  # keep monitoring; say what went wrong
                logger.exception("monitoring: a cycle failed")

    def collect(self) -> None:
        """Move the queue into the window (encoded once, off the request path)."""
        batches = []
        with self.lock:
            while self.queue:
                batches.append(self.queue.popleft())
            self.queued_rows = 0
        if batches:
            self.window.add(batches)

    def cycle(self) -> str:
        """Write this worker's window; if this worker leads, test the service's window.
        Returns ``WAITING`` while the first test waits for the other workers' windows."""
        path = self.folder / f"{WINDOW_PREFIX}{os.getpid()}.npz"
        if self.window.changed or not path.exists():  # an empty file says: this worker lives
            self.window.changed = False
            arrays = self.window.arrays()
            write_atomically(path, lambda out: np.savez(out, **arrays))
        else:
            with contextlib.suppress(OSError):  # gone meanwhile: rewritten next cycle
                os.utime(path)  # still alive: its rows still count
        if not self.lead():
            return ""
        if not self.tested_once and self.waits_for_workers():
            return WAITING
        self.evaluate()
        self.tested_once = True
        return ""

    def waits_for_workers(self) -> bool:
        """Whether the first test should wait: some worker's window is missing, and the
        bound (``FIRST_WAIT_CYCLES`` cycles, at least ``FIRST_WAIT_MIN_S``, after the first
        attempt) is not reached."""
        now = time.monotonic()
        if self.first_deadline is None:
            self.first_deadline = now + max(FIRST_WAIT_CYCLES * self.every_s, FIRST_WAIT_MIN_S)
        if now >= self.first_deadline:
            return False
        alive = time.time() - self.max_age_s
        files = self.folder.glob(f"{WINDOW_PREFIX}*.npz")
        with contextlib.suppress(OSError):
            return sum(1 for f in files if f.stat().st_mtime >= alive) < self.workers
        return True

    def lead(self) -> bool:
        if self.leader_fd is not None:
            return True
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.leader_fd = fd
        # Only the leader tests, so only it holds the tests' code (scipy.special). Importing it
        # is CPU time under the GIL: spent here, when this worker starts to lead, before its
        # first test rather than inside a request's path (it was seen to slow the first load).
        from inference import stat_tests  # noqa: F401

        return True

    def evaluate(self) -> dict[str, Any]:
        """Test the service's newest window, set the gauges, publish ``result.json``."""
        window = merged(
            self.folder, self.kinds, self.prediction_kind, self.window_size, self.max_age_s
        )
        stamps, by_candidate = window.stamps, window.by_candidate
        live = window.predictions[~by_candidate]
        result = drift.evaluate(self.reference, window.columns, live, min_rows=self.min_rows)
        if by_candidate.any():
            canary = window.predictions[by_candidate]
            result["candidate_prediction"] = drift.prediction_report(
                self.reference, canary, min_rows=self.min_rows
            )
        export(result)
        status = {
            "enabled": True,
            "evaluated_at": iso(time.time()),
            "leader_pid": os.getpid(),
            "window": {
                "rows": int(len(stamps)),
                "size": self.window_size,
                "min_rows": self.min_rows,
                "every_s": self.every_s,
                "oldest": iso(float(stamps[0])) if len(stamps) else None,
                "newest": iso(float(stamps[-1])) if len(stamps) else None,
                "oldest_unix": float(stamps[0]) if len(stamps) else None,
                "newest_unix": float(stamps[-1]) if len(stamps) else None,
                "workers": len(window.pids),
                "workers_expected": self.workers,
                "worker_pids": window.pids,
                "live_rows": int(len(live)),
                "candidate_rows": int(by_candidate.sum()),
            },
            **result,
            "reference": self.reference.describe(),
        }
        body = strict_json.dumps(status).encode()
        write_atomically(self.folder / RESULT_FILE, lambda out: out.write(body))
        return status

    # -- GET /monitoring -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The last evaluation of the service (any worker answers the same), or why there is
        none."""
        if not self.enabled:
            return {"enabled": False, "reason": self.reason}
        try:
            return json.loads((self.folder / RESULT_FILE).read_bytes())
        except (OSError, ValueError):
            return {
                "enabled": True,
                "reason": (
                    f"not evaluated yet: tested every {self.every_s:g} s, the first time "
                    "once every worker has written its rows"
                ),
                "evaluated_at": None,
                "window": {"rows": 0, "size": self.window_size, "min_rows": self.min_rows},
                "reference": self.reference.describe(),
            }
