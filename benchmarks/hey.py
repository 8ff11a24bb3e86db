"""HTTP load from ``hey`` (a compiled Go load generator, Debian package ``hey``).

The previous Python client (httpx on asyncio) cost about as much CPU per request as the
server it measured, on the same 2 cores; ``hey`` costs a small fraction of that, and is
pinned to one core (``-cpus 1``) so the server always keeps the other. ``hey -o csv`` prints
one line per answered request (latency, status code, start offset); requests that got no
answer at all (connection refused or reset, timeout) are left out of it, so they are counted
as the difference between the requests asked for and the lines printed.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

INSTALL_HINT = "install it with `apt-get install -y hey` (make bench does it when missing)"


class LoadError(Exception):
    """The load generator is missing or failed."""


@dataclass(frozen=True)
class Sample:
    """One answered request, as ``hey -o csv`` reports it."""

    seconds: float
    status: int
    offset: float  # when the request started, seconds after the run began


@dataclass
class Load:
    """What one ``hey`` run measured."""

    requests: int  # asked for
    rows_per_request: int
    concurrency: int
    seconds: float  # first request sent -> last answer received
    statuses: dict[int, int] = field(default_factory=dict)  # answered requests by status
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def non_200(self) -> int:
        """Every request that did not get a 200: other statuses and no answer at all."""
        return self.requests - self.ok

    @property
    def rows_per_s(self) -> float | None:
        """Rows answered with 200 per second of wall time."""
        return self.ok * self.rows_per_request / self.seconds if self.seconds > 0 else None


def hey_path() -> str:
    """The ``hey`` executable on PATH."""
    found = shutil.which("hey")
    if not found:
        raise LoadError(f"the load generator `hey` is not on PATH: {INSTALL_HINT}")
    return found


def parse_csv(text: str) -> list[Sample]:
    """The samples in ``hey -o csv`` output (columns ``response-time``, ``status-code``,
    ``offset``, among others)."""
    reader = csv.DictReader(io.StringIO(text))
    needed = {"response-time", "status-code", "offset"}
    if reader.fieldnames is None or not needed <= set(reader.fieldnames):
        raise LoadError(f"hey printed no CSV header with {sorted(needed)}: {text[:200]!r}")
    return [
        Sample(float(row["response-time"]), int(row["status-code"]), float(row["offset"]))
        for row in reader
    ]


def summarize(
    samples: list[Sample], *, requests: int, rows_per_request: int, concurrency: int
) -> Load:
    """Percentiles of the 200 answers' latencies, status counts and wall time of a run."""
    statuses = Counter(s.status for s in samples)
    ok_ms = np.array([s.seconds * 1000 for s in samples if s.status == 200])
    seconds = max((s.offset + s.seconds for s in samples), default=0.0)
    percentiles = (
        {f"p{q}_ms": float(np.percentile(ok_ms, q)) for q in (50, 95, 99)} if ok_ms.size else {}
    )
    return Load(
        requests=requests,
        rows_per_request=rows_per_request,
        concurrency=concurrency,
        seconds=seconds,
        statuses=dict(sorted(statuses.items())),
        **percentiles,
    )


def run_hey(
    url: str,
    body: bytes,
    *,
    requests: int,
    concurrency: int,
    rows_per_request: int = 1,
    content_type: str = "application/json",
    timeout_s: int = 60,
    headers: dict[str, str] | None = None,
) -> Load:
    """``requests`` POSTs of ``body`` to ``url`` from ``concurrency`` keep-alive clients,
    each waiting for its answer before sending the next; ``headers``: sent with each."""
    # hey refuses fewer requests than clients, and each client sends requests // concurrency:
    # ask for a multiple of the clients, or the remainder would count as unanswered.
    requests = -(-max(requests, concurrency) // concurrency) * concurrency
    with tempfile.NamedTemporaryFile("wb", suffix=".body") as payload:
        payload.write(body)
        payload.flush()
        cmd = [
            hey_path(),
            "-cpus",
            "1",
            "-n",
            str(requests),
            "-c",
            str(concurrency),
            "-t",
            str(timeout_s),
            "-m",
            "POST",
            "-T",
            content_type,
            "-D",
            payload.name,
            *(arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")),
            "-o",
            "csv",
            url,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise LoadError(f"hey failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    samples = parse_csv(done.stdout)
    return summarize(
        samples, requests=requests, rows_per_request=rows_per_request, concurrency=concurrency
    )


def warm_up(
    url: str,
    body: bytes,
    *,
    requests: int = 50,
    concurrency: int = 2,
    headers: dict[str, str] | None = None,
) -> None:
    """A few requests whose numbers are dropped: the first ones pay for lazy imports,
    connection set-up and caches."""
    run_hey(url, body, requests=requests, concurrency=concurrency, headers=headers)
