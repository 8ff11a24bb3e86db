"""The adaptive-batch client: stream a file through the service's ``predict_batch``.

The input is cut into requests of ``batch_size`` rows, ``concurrency`` of them in flight.
The server's adaptive batcher merges concurrent requests into model calls; this client
adapts too: a 503 (load shed) halves the requests it keeps in flight, and successes win
them back one at a time, up to ``concurrency``, so an overloaded server is not hammered.

Exactly once, in order: every request carries a sequence number; answers wait in a bounded
reorder buffer and are committed strictly in input order, as whole parts of the resumable
output (``clients.io.PartWriter``). A retried request may be answered twice by the server
(say, it answered just before a restart), but only one answer per sequence number is ever
kept. An interrupted run (Ctrl-C, SIGTERM, a server that stays down) commits what it can and
the next run resumes after the last committed row; a killed run loses at most the
uncommitted tail (about one second of work) and redoes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from clients.errors import ClientError
from clients.http import (
    RETRY_STATUSES,
    Backoff,
    Retries,
    decode,
    describe,
    error_of,
    normalize_url,
)
from clients.io import Manifest, PartWriter, count_rows
from clients.service import ServiceInfo, batch_predictions, fetch_service_info

COMMIT_SECONDS = 1.0  # commit the in-order prefix at least this often
COMMIT_ROWS = 50_000  # ... or as soon as this many rows wait


@dataclass
class StreamSummary:
    rows: int = 0  # answered and written by this run
    resumed_from: int = 0
    requests: int = 0
    retries: int = 0
    shed: int = 0  # 503/429 answers among the retries
    errors: int = 0  # requests that failed for good
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful attempts
    output: Path | None = None
    complete: bool = False
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.complete and not self.errors

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "resumed_from": self.resumed_from,
            "requests": self.requests,
            "retries": self.retries,
            "shed_503": self.shed,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows / self.seconds, 1) if self.seconds else None,
            "p50_ms": self.percentile(50),
            "p99_ms": self.percentile(99),
            "output": str(self.output) if self.output else None,
            "complete": self.complete,
        }

    def text(self) -> str:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} ms"

        rate = self.rows / self.seconds if self.seconds else 0.0
        lines = [
            f"rows      {self.rows:,} in {self.seconds:.1f} s ({rate:,.0f} rows/s)"
            + (f", resumed after {self.resumed_from:,}" if self.resumed_from else ""),
            f"requests  {self.requests:,} ({self.retries:,} retries, {self.shed:,} of them "
            f"after 503/429; {self.errors} errors)",
            f"latency   p50 {ms(self.percentile(50))}, p99 {ms(self.percentile(99))}",
        ]
        if self.complete:
            lines.append(f"output    {self.output}")
        else:
            lines.append(f"partial   {self.output}.partial (run again to resume)")
        return "\n".join(lines)


class AdaptiveLimit:
    """At most ``limit`` requests in flight; halved on load shedding, +1 per ``limit`` wins."""

    def __init__(self, maximum: int):
        self.maximum = maximum
        self.limit = maximum
        self.active = 0
        self._wins = 0
        self._last_cut = 0.0
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.active < self.limit)
            self.active += 1

    async def release(self, shed: bool = False) -> None:
        async with self._changed:
            self.active -= 1
            now = time.monotonic()
            if shed:
                # One cut per burst: many requests shed at once mean one overload.
                if now - self._last_cut > 0.5:
                    self.limit = max(1, self.limit // 2)
                    self._last_cut, self._wins = now, 0
            elif self.limit < self.maximum:
                self._wins += 1
                if self._wins >= self.limit:
                    self.limit, self._wins = self.limit + 1, 0
            self._changed.notify_all()


class _Fatal(Exception):
    """A request that failed for good (the message says why). ``resumable``: not the input's
    fault (the service failed, or stayed unreachable), so a rerun may finish the job."""

    def __init__(self, message: str, resumable: bool = True) -> None:
        super().__init__(message)
        self.resumable = resumable


def stream_file(
    input: str | Path,
    output: str | Path,
    *,
    url: str,
    concurrency: int = 4,
    batch_size: int = 100,
    id_column: str | None = None,
    timeout: float = 30.0,
    retries: int = 8,
    backoff: Backoff | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> StreamSummary:
    """Send every row of ``input`` to the service at ``url``; write id + prediction rows.

    Returns a summary whose ``complete`` is True when OUTPUT holds every input row. Raises
    ClientError for bad input (its partial output removed: a rerun of the same input would
    fail again) or when a request fails for good otherwise (after committing the rows
    answered before it, so a rerun resumes).
    """
    if concurrency < 1 or batch_size < 1:
        raise ClientError("concurrency and batch size must be at least 1")
    url = normalize_url(url)
    backoff = backoff or Backoff(retries=retries)
    service = fetch_service_info(url, timeout=timeout, backoff=backoff)
    if service.max_rows and batch_size > service.max_rows:
        raise ClientError(
            f"--batch-size {batch_size} is more than the service takes ({service.max_rows})"
        )
    manifest = Manifest.for_job(input, service.model or url, id_column)
    writer = PartWriter(output, manifest, overwrite=overwrite)
    summary = StreamSummary(resumed_from=writer.rows_done, output=writer.output)
    chunks = writer.remaining_chunks(
        input, batch_size, columns=service.read_columns(id_column), dtypes=service.dtypes
    )
    runner = _Runner(
        writer=writer,
        chunks=chunks,
        service=service,
        url=url,
        concurrency=concurrency,
        timeout=timeout,
        backoff=backoff,
        summary=summary,
        progress=progress,
        total=count_rows(input),
    )
    try:
        asyncio.run(runner.run())
    except _Fatal as exc:
        if not exc.resumable:
            writer.abandon()
            raise ClientError(str(exc)) from None
        raise ClientError(
            f"{exc}; {writer.rows_done:,} rows are in {writer.partial}: run again to resume"
        ) from None
    except ClientError:  # the input (a row outside the contract): nothing half-made is kept
        writer.abandon()
        raise
    return summary


@dataclass
class _Runner:
    """One run: reads chunks, keeps requests in flight, commits answers in order."""

    writer: PartWriter
    chunks: Iterator[pd.DataFrame]
    service: ServiceInfo
    url: str
    concurrency: int
    timeout: float
    backoff: Backoff
    summary: StreamSummary
    progress: bool
    total: int | None

    async def run(self) -> None:
        from tqdm import tqdm

        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # SIGTERM == Ctrl-C
            loop.add_signal_handler(signal.SIGTERM, main.cancel)
        self.limit = AdaptiveLimit(self.concurrency)
        # Rows between reading and committing: bounded, so memory is too.
        self.window = asyncio.Semaphore(self.concurrency * 4)
        self.done: dict[int, tuple[np.ndarray, list[Any]]] = {}
        self.next_commit = 0
        self.pending: list[tuple[np.ndarray, list[Any]]] = []
        self.pending_rows = 0
        self.last_commit = time.monotonic()
        self.bar = tqdm(
            total=self.total,
            initial=self.writer.rows_done,
            unit="rows",
            unit_scale=True,
            disable=True if not self.progress else None,
            desc="stream",
            dynamic_ncols=True,
            smoothing=0.1,
        )
        start = time.perf_counter()
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        tasks: set[asyncio.Task] = set()
        failure: BaseException | None = None
        self.failure: BaseException | None = None
        try:
            async with httpx.AsyncClient(
                base_url=self.url, timeout=self.timeout, limits=limits
            ) as client:
                self.client = client
                seq = 0
                while True:
                    await self.window.acquire()
                    if self.failure is not None:
                        break
                    chunk = await asyncio.to_thread(next, self.chunks, None)
                    if chunk is None or self.failure is not None:
                        break
                    task = asyncio.create_task(self.request(seq, chunk))
                    tasks.add(task)
                    task.add_done_callback(self._finished(tasks))
                    seq += 1
                if self.failure is None and tasks:
                    await asyncio.gather(*tasks)
        except BaseException as exc:
            failure = exc
        finally:
            failure = self.failure or failure
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self.commit(force=True)  # whatever is answered, in order, is kept
            self.bar.close()
            self.summary.seconds = time.perf_counter() - start
        if isinstance(failure, asyncio.CancelledError | KeyboardInterrupt):
            self.summary.interrupted = True  # Ctrl-C or SIGTERM: a rerun resumes
            return
        if failure is not None:
            raise failure
        self.writer.finish()
        self.summary.complete = True

    def _finished(self, tasks: set[asyncio.Task]):
        def callback(task: asyncio.Task) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None and self.failure is None:
                # Stop reading and sending (wake the reader if the window is full); the
                # answered in-order prefix is still committed.
                self.failure = task.exception()
                self.window.release()

        return callback

    async def request(self, seq: int, chunk: pd.DataFrame) -> None:
        ids = self.writer.ids_of(chunk)
        payload = self.service.records(chunk)
        retrying = Retries(self.backoff)
        while True:
            await self.limit.acquire()
            shed, retry_after = False, None
            began = time.perf_counter()
            try:
                response = await self.client.post(self.service.batch_route, json=payload)
            except httpx.TransportError as exc:  # refused, reset, timed out: try again
                await self.limit.release()
                problem = describe(exc)
            else:
                elapsed = time.perf_counter() - began
                shed = response.status_code in RETRY_STATUSES
                await self.limit.release(shed=shed)
                if response.is_success:
                    predictions = batch_predictions(decode(response), len(ids))
                    self.summary.requests += 1
                    self.summary.latencies.append(elapsed)
                    self.done[seq] = (ids, predictions)
                    self.commit()
                    return
                problem = error_of(response)
                if not shed:
                    self.summary.requests += 1
                    self.summary.errors += 1
                    # rows as a person counts them: the first data row of the file is 1
                    first, last = int(chunk.index[0]) + 1, int(chunk.index[-1]) + 1
                    # a 4xx: these rows are at fault, and would be again
                    raise _Fatal(f"rows {first}-{last}: {problem}", response.status_code >= 500)
                retry_after = response.headers.get("retry-after")
            self.summary.requests += 1
            delay = retrying.next_delay(retry_after if shed else None)
            if delay is None:
                self.summary.errors += 1
                raise _Fatal(retrying.gave_up(problem))
            self.summary.retries += 1
            self.summary.shed += shed
            await asyncio.sleep(delay)

    def commit(self, force: bool = False) -> None:
        """Move the answered in-order prefix to the output (whole parts, in order)."""
        while self.next_commit in self.done:
            ids, predictions = self.done.pop(self.next_commit)
            self.pending.append((ids, predictions))
            self.pending_rows += len(ids)
            self.next_commit += 1
            self.window.release()
            self.bar.update(len(ids))
        now = time.monotonic()
        due = self.pending_rows >= COMMIT_ROWS or now - self.last_commit >= COMMIT_SECONDS
        if self.pending and (force or due):
            ids = np.concatenate([p[0] for p in self.pending])
            predictions = [v for p in self.pending for v in p[1]]
            self.writer.write(ids, predictions)
            self.summary.rows += len(ids)
            self.pending, self.pending_rows, self.last_commit = [], 0, now
