"""The client's retry policy as plain functions: Retry-After read as seconds or an HTTP date,
delays bounded, retries stopped by count or total wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from clients.http import Backoff, Retries, retry_after_seconds


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 0 ") == 0.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=5), usegmt=True), now) == 5
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=5), usegmt=True), now) == 0
    for unreadable in (None, "", "soon", "-1", "1.5x"):
        assert retry_after_seconds(unreadable) is None


def test_a_delay_is_at_least_what_the_server_asks_and_bounded() -> None:
    backoff = Backoff(retries=3, base=0.25, max_wait=10)
    for _ in range(50):
        assert 2.0 <= backoff.delay(1, "2") <= 2.25  # honoured, plus a little jitter
        assert 0.125 <= backoff.delay(1) <= 0.25  # no header: exponential backoff
        assert 1.0 <= backoff.delay(4) <= 2.0


def test_retries_stop_at_their_count_or_their_total_wait() -> None:
    counted = Retries(Backoff(retries=2, base=0.01, max_wait=100))
    assert counted.next_delay("1") is not None and counted.next_delay("1") is not None
    assert counted.next_delay("1") is None
    assert counted.gave_up("HTTP 503: busy").startswith("HTTP 503: busy (gave up after 2 retries")

    timed = Retries(Backoff(retries=100, base=0.01, max_wait=5))
    assert 3 <= timed.next_delay("3") <= 3.01
    assert timed.next_delay("3") is None  # the server asks for more than is left: stop now
    assert timed.attempt == 1

    trimmed = Retries(Backoff(retries=100, base=4, cap=8, max_wait=5))
    delays = [trimmed.next_delay(), trimmed.next_delay()]
    assert delays[1] == pytest.approx(5 - delays[0])  # own backoff trimmed to the bound
    assert trimmed.next_delay() is None
