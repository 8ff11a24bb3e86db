"""The admission counter, the body reader and the interval log, without a server
(``serving.admission``, ``serving.arrival``): the budget, the receiving share, the outcome of
a body that arrives, times out, is too large or whose client leaves, and one log line per kind
and interval."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from serving.admission import InFlight, receiving_message, shed_message
from serving.arrival import ARRIVED, GONE, TIMED_OUT, TOO_LARGE, IntervalLog, read_body
from serving.settings import Settings


def test_receiving_requests_hold_at_most_half_the_budget() -> None:
    slots = InFlight(64)
    assert slots.receiving_limit == 32
    assert all(slots.try_enter(receiving=True) for _ in range(32))
    assert not slots.may_receive and not slots.try_enter(receiving=True)
    # The other half is left to requests whose bodies have arrived.
    assert all(slots.try_enter() for _ in range(32))
    assert slots.full and not slots.try_enter()
    slots.arrived()  # one receiving request has its body: its slot is still taken
    assert slots.full and not slots.try_enter(receiving=True)
    slots.leave()
    assert slots.may_receive and slots.try_enter(receiving=True)
    assert (slots.count, slots.receiving) == (64, 32)


def test_a_budget_of_one_still_admits_a_receiving_request() -> None:
    slots = InFlight(1)
    assert slots.receiving_limit == 1
    assert slots.try_enter(receiving=True)
    assert not slots.try_enter() and not slots.try_enter(receiving=True)
    slots.arrived()
    slots.leave()
    assert (slots.count, slots.receiving) == (0, 0)


def test_counts_cannot_go_below_zero() -> None:
    slots = InFlight(4)
    with pytest.raises(RuntimeError, match="no request was admitted"):
        slots.leave()
    assert slots.try_enter()
    with pytest.raises(RuntimeError, match="no admitted request is receiving"):
        slots.arrived()
    with pytest.raises(ValueError, match="at least 1, not 0"):
        InFlight(0)


def test_refusals_name_the_route_its_setting_and_what_to_do() -> None:
    assert shed_message("/predict", 64, 1, "TAGSERVE_PREDICT_QUEUE") == (
        "overloaded: /predict already has 64 requests in flight in this worker "
        "(TAGSERVE_PREDICT_QUEUE); retry after 1 s, or send rows in bulk to /predict_batch"
    )
    assert shed_message("/invocations", 8, 2, "TAGSERVE_BULK_QUEUE") == (
        "overloaded: /invocations already has 8 requests in flight in this worker "
        "(TAGSERVE_BULK_QUEUE); retry after 2 s"
    )
    assert "send the whole body at once" in receiving_message("/predict", 32, 1)


def test_every_prediction_route_has_a_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGSERVE_PREDICT_QUEUE", "3")
    monkeypatch.setenv("TAGSERVE_BULK_QUEUE", "9")
    monkeypatch.setenv("TAGSERVE_REQUEST_READ_SECONDS", "2.5")
    settings = Settings.from_env()
    options = settings.shedding(["/predict", "/predict_batch", "/invocations"])
    assert options["budgets"] == {
        "/predict": (4, "TAGSERVE_PREDICT_QUEUE"),
        "/predict_batch": (10, "TAGSERVE_BULK_QUEUE"),
        "/invocations": (10, "TAGSERVE_BULK_QUEUE"),
    }
    assert options["read_seconds"] == 2.5
    monkeypatch.setenv("TAGSERVE_REQUEST_READ_SECONDS", "0")
    with pytest.raises(ValueError, match="TAGSERVE_REQUEST_READ_SECONDS must be more than 0"):
        Settings.from_env()


def receiving(messages: Iterable[dict[str, Any] | float]) -> Any:
    """An ASGI ``receive`` that hands out ``messages`` in order; a number is a pause (seconds)
    before the next one, as a client sending slowly makes; after the last, it waits."""
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        while pending and not isinstance(pending[0], dict):
            await asyncio.sleep(pending.pop(0))
        if not pending:
            await asyncio.Event().wait()
        return pending.pop(0)

    return receive


def chunk(body: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


@pytest.mark.parametrize(
    ("messages", "outcome", "body"),
    [
        ([chunk(b'{"a":'), chunk(b" 1}", more=False)], ARRIVED, b'{"a": 1}'),
        ([chunk(b"", more=False)], ARRIVED, b""),
        ([chunk(b'{"a":'), {"type": "http.disconnect"}], GONE, b""),
        ([chunk(b'{"a":'), 0.2, chunk(b" 1}", more=False)], TIMED_OUT, b""),
        ([chunk(b"x" * 6), chunk(b"x" * 6, more=False)], TOO_LARGE, b""),
        ([chunk(b"x")], TIMED_OUT, b""),  # a client that never sends the rest
    ],
)
def test_read_body_outcomes(messages: list, outcome: str, body: bytes) -> None:
    arrival = asyncio.run(read_body(receiving(messages), seconds=0.05, max_bytes=10))
    assert (arrival.outcome, arrival.body) == (outcome, body)


def test_the_interval_log_writes_one_line_per_kind_and_endpoint() -> None:
    lines: list[str] = []

    async def run() -> None:
        log = IntervalLog(seconds=0.05, log=lines.append)
        for _ in range(120):
            log.add(TIMED_OUT, "/predict")
        for _ in range(3):
            log.add(GONE, "/invocations")
        assert lines == []  # nothing until the interval ends
        await asyncio.sleep(0.2)
        log.add(GONE, "/invocations")  # a new interval
        await asyncio.sleep(0.2)

    asyncio.run(run())
    assert lines == [
        "3 request(s) were abandoned by their client on /invocations in the last 0.05 s",
        "120 request(s) timed out while arriving on /predict in the last 0.05 s",
        "1 request(s) were abandoned by their client on /invocations in the last 0.05 s",
    ]
