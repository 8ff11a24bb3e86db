"""Slow and vanished clients cannot take the service down, against a real ``bentoml serve``
with 2 workers: a client that hangs up mid-body frees its slot at once, a body that trickles
is cut at ``TAGSERVE_REQUEST_READ_SECONDS`` (408) or refused once the receiving share of the
budget is taken (503), and an honest client beside them is answered, on every prediction
route. Raw asyncio sockets play the bad clients (tests.helpers.slow_clients)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from serving.middleware import GRACE_SECONDS
from tests.helpers.servers import Server, serving
from tests.helpers.service_models import (
    PROJECT_ROOT,
    Models,
    diamond_records,
    records,
    subprocess_env,
)
from tests.helpers.slow_clients import counter, in_progress, slow_attack, vanish

pytestmark = pytest.mark.server

READ_SECONDS = 3
VANISHED = 200
# The full 25 s on /predict; the other routes share its admission code, shorter.
SLOW = {"/predict": 25.0, "/predict_batch": 8.0, "/invocations": 8.0}
SLOW_CLIENTS = 400


@pytest.fixture(scope="module", autouse=True)
def sockets() -> None:
    """Room for the slow clients' sockets (each reconnects when cut) in this process."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 4 * SLOW_CLIENTS + 1024
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"{needed} open files are needed; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slow-clients") / "bentoml-serve.log"


@pytest.fixture(scope="module")
def server(models: Models, log: Path) -> Iterator[Server]:
    env = subprocess_env(
        models,
        TAGSERVE_MODEL=models.regressor,
        TAGSERVE_WORKERS="2",
        TAGSERVE_REQUEST_READ_SECONDS=str(READ_SECONDS),
        TAGSERVE_MONITOR="off",
        # The adaptive batcher's own shedding is not under test: a loaded machine must not
        # turn an honest /predict_batch into its 503.
        TAGSERVE_MAX_LATENCY_MS="30000",
    )
    with serving("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as running:
        yield running


@pytest.fixture(scope="module")
def workers(server: Server) -> set[int]:
    """The worker pids at the start: none may be restarted."""
    return worker_pids(server)


@pytest.fixture(scope="module")
def bodies(models: Models) -> dict[str, bytes]:
    """Each route's body of one real row of the model's example."""
    record = records(models.example(models.regressor))[0]
    return {
        "/predict": json.dumps(record).encode(),
        "/predict_batch": json.dumps([record]).encode(),
        "/invocations": json.dumps({"dataframe_records": [record]}).encode(),
    }


def worker_pids(server: Server) -> set[int]:
    """The pids of the server's workers (circus restarts a worker that dies: a new pid)."""
    family = psutil.Process(server.process.pid).children(recursive=True)
    pids = {p.pid for p in family if "_bentoml_impl.worker.service" in p.cmdline()}
    assert len(pids) == 2, pids
    return pids


def expected(server: Server, path: str, body: bytes) -> Any:
    answer = httpx.post(
        f"{server.url}{path}", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize("path", list(SLOW))
def test_vanished_clients_free_their_slots_at_once(
    server: Server, workers: set[int], bodies: dict, path: str
) -> None:
    """200 clients send headers and 10 bytes of body, then hang up: the next 20 honest
    requests are all answered, long before BentoML's own 60 s request timeout could have
    freed anything, and no request is left in progress."""
    body = bodies[path]
    want = expected(server, path, body)
    before = counter(server.url, "tagserve_requests_abandoned", path)
    port = httpx.URL(server.url).port

    async def run() -> list[httpx.Response]:
        await asyncio.gather(*(vanish(port, path, body) for _ in range(VANISHED)))
        headers = {"content-type": "application/json"}
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return [await client.post(path, content=body, headers=headers) for _ in range(20)]

    began = time.monotonic()
    answers = asyncio.run(run())
    took = time.monotonic() - began
    assert [a.status_code for a in answers] == [200] * 20, answers[-1].text
    assert all(a.json() == want for a in answers)
    assert took < 30, took  # the hang-ups freed the slots, not a timeout
    assert in_progress(server.url).get(path, 0.0) == 0.0
    assert counter(server.url, "tagserve_requests_abandoned", path) - before == VANISHED
    assert worker_pids(server) == workers


def test_a_client_that_leaves_is_dropped_from_its_batch(
    server: Server, workers: set[int], models: Models
) -> None:
    """40 clients send whole /predict_batch bodies and hang up at once, beside 20 honest
    ones (60 in all: within one worker's budget, however they are spread): those still
    waiting (in line, or queued in an adaptive batch) are dropped, the honest ones merged
    with them all get their own right predictions."""
    rows = diamond_records(20)
    body = json.dumps(rows).encode()
    want = expected(server, "/predict_batch", body)
    assert len(want) == len(rows)
    before = counter(server.url, "tagserve_requests_abandoned", "/predict_batch")
    port = httpx.URL(server.url).port

    async def run() -> list[httpx.Response]:
        headers = {"content-type": "application/json"}
        path = "/predict_batch"
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            gone = [vanish(port, path, body, after=0.02, whole=True) for _ in range(40)]
            honest = [client.post(path, content=body, headers=headers) for _ in range(20)]
            answers = await asyncio.gather(*gone, *honest)
        return answers[len(gone) :]

    answers = asyncio.run(run())
    assert [a.status_code for a in answers] == [200] * 20, answers[0].text
    assert all(a.json() == want for a in answers)
    assert counter(server.url, "tagserve_requests_abandoned", "/predict_batch") > before
    give_up = time.monotonic() + 30
    while in_progress(server.url).get("/predict_batch", 0.0) and time.monotonic() < give_up:
        time.sleep(0.2)
    assert in_progress(server.url).get("/predict_batch", 0.0) == 0.0
    assert worker_pids(server) == workers


@pytest.mark.parametrize("path", list(SLOW))
def test_slow_bodies_cannot_starve_honest_requests(
    server: Server, workers: set[int], bodies: dict, path: str
) -> None:
    """400 clients trickle their bodies (a byte every 2 s, reconnecting when cut) while an
    honest client sends a request every 50 ms: at least 99 % of the honest answers are 200
    and right, none lost; every slow connection is answered 408 (past the deadline) or 503
    (the receiving share taken), within the deadline and the grace."""
    body = bodies[path]
    want = expected(server, path, body)
    timed_out = counter(server.url, "tagserve_requests_read_timeout", path)
    slow, seen = asyncio.run(
        slow_attack(server.url, path, body, clients=SLOW_CLIENTS, seconds=SLOW[path])
    )
    assert seen.errors == []  # no honest request lost
    assert seen.sent > 0 and seen.ok_ratio >= 0.99, seen.statuses
    assert set(seen.statuses) <= {200, 503}, seen.statuses
    assert all(p == want for p in seen.predictions)
    assert set(slow.statuses) <= {408, 503}, slow.statuses
    assert slow.statuses[408] > 0 and slow.statuses[503] > 0, slow.statuses
    assert max(slow.lifetimes) < READ_SECONDS + GRACE_SECONDS + 2, max(slow.lifetimes)
    assert (
        counter(server.url, "tagserve_requests_read_timeout", path) - timed_out
        == (slow.statuses[408])
    )
    assert in_progress(server.url).get(path, 0.0) == 0.0
    assert worker_pids(server) == workers


def test_a_log_line_per_kind_and_interval(server: Server, log: Path) -> None:
    """The tests above made thousands of timed-out, refused and abandoned requests: each kind
    is logged as a count, once per endpoint, worker and 10 s, never once per request."""
    pattern = re.compile(
        r"\[entry_service:tagserve:(\d+)\] (\d+) request\(s\) (timed out while arriving|"
        r"were abandoned by their client|were refused while sending their body slowly) "
        r"on (\S+) in the last 10 s"
    )
    time.sleep(11)  # the last interval's lines are written
    lines = [m.groups() for m in pattern.finditer(log.read_text())]
    kinds = {(kind, path) for _, _, kind, path in lines}
    for path in SLOW:
        assert ("timed out while arriving", path) in kinds
        assert ("were abandoned by their client", path) in kinds
    logged = {(kind, path): 0 for kind, path in kinds}
    for _, n, kind, path in lines:
        logged[kind, path] += int(n)
    for path in SLOW:
        timed_out = counter(server.url, "tagserve_requests_read_timeout", path)
        assert logged["timed out while arriving", path] == timed_out
    assert len(lines) < sum(logged.values()) / 10  # counts, not a line per request


DRAIN_SECONDS = 10


def test_the_drain_keeps_its_bound_with_slow_and_vanished_clients(
    models: Models, bodies: dict, tmp_path: Path
) -> None:
    """SIGTERM while 200 clients trickle their bodies and 100 hang up mid-body: the slow ones
    are cut by the read deadline, the service exits cleanly within TAGSERVE_DRAIN_SECONDS."""
    env = subprocess_env(
        models,
        TAGSERVE_MODEL=models.regressor,
        TAGSERVE_WORKERS="2",
        TAGSERVE_REQUEST_READ_SECONDS=str(READ_SECONDS),
        TAGSERVE_DRAIN_SECONDS=str(DRAIN_SECONDS),
        TAGSERVE_MONITOR="off",
    )
    body = bodies["/predict"]
    with serving("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=tmp_path / "log") as server:
        port = httpx.URL(server.url).port

        async def run() -> float:
            attack = asyncio.ensure_future(
                slow_attack(server.url, "/predict", body, clients=200, seconds=DRAIN_SECONDS)
            )
            await asyncio.gather(*(vanish(port, "/predict", body, after=5) for _ in range(100)))
            stopped_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            while server.process.poll() is None and time.monotonic() < stopped_at + 30:
                await asyncio.sleep(0.1)
            took = time.monotonic() - stopped_at
            await attack
            return took

        took = asyncio.run(run())
        assert server.process.returncode == 0, server.log.read_text()[-3000:]
        assert took <= DRAIN_SECONDS + 2, took
