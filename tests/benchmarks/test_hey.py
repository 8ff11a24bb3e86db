"""benchmarks.hey: real hey runs against a real HTTP server; its CSV parsed and summarized."""

from __future__ import annotations

import pytest

from benchmarks.hey import LoadError, parse_csv, run_hey
from benchmarks.servers import free_port

SHED = b'{"shed": true}'  # the http_url server answers such a body 503

needs_hey = pytest.mark.usefixtures("hey_installed")


@needs_hey
def test_every_request_is_counted_with_its_status(http_url: str) -> None:
    load = run_hey(http_url, b'{"a": 1}', requests=40, concurrency=4, rows_per_request=3)
    assert load.statuses == {200: 40}
    assert load.non_200 == 0 and load.unanswered == 0
    assert 0 < load.p50_ms <= load.p95_ms <= load.p99_ms
    assert load.rows_per_s == pytest.approx(40 * 3 / load.seconds)


@needs_hey
def test_requests_are_rounded_up_to_a_multiple_of_the_clients(http_url: str) -> None:
    """hey sends requests // concurrency per client: 2000 over 32 clients would be 1984 sent
    and 16 reported unanswered."""
    load = run_hey(http_url, b'{"a": 1}', requests=41, concurrency=4)
    assert load.statuses == {200: 44}
    assert load.requests == 44 and load.unanswered == 0 and load.non_200 == 0


@needs_hey
def test_non_200_answers_are_reported_and_left_out_of_the_latencies(http_url: str) -> None:
    load = run_hey(http_url, SHED, requests=20, concurrency=2)
    assert load.statuses == {503: 20}
    assert load.non_200 == 20 and load.unanswered == 0
    assert load.p50_ms is None and load.rows_per_s == 0


@needs_hey
def test_requests_without_an_answer_count_as_non_200() -> None:
    load = run_hey(f"http://127.0.0.1:{free_port()}/", b"{}", requests=6, concurrency=2)
    assert load.statuses == {}
    assert load.unanswered == 6 and load.non_200 == 6


def test_output_that_is_not_hey_csv_is_refused() -> None:
    with pytest.raises(LoadError, match="no CSV header"):
        parse_csv("Summary:\n  Total: 1.0 secs\n")
