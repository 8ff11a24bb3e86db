"""The split of a failed merged model call, as plain functions: which records fail, how many
calls it costs, and the error each request gets."""

from __future__ import annotations

from collections.abc import Sequence

import bentoml
import pytest

from serving.batching import RecordFailed, predict_each, request_error


class Doubler:
    """A model call that doubles numbers and raises on the ones it cannot take, counting
    its calls."""

    def __init__(self, error: type[Exception] = ValueError) -> None:
        self.calls = 0
        self.error = error

    def __call__(self, rows: Sequence[float]) -> list[float]:
        self.calls += 1
        if any(r < 0 for r in rows):
            raise self.error("negative input")
        return [r * 2 for r in rows]


def test_a_call_that_succeeds_is_made_once() -> None:
    model = Doubler()
    assert predict_each([1.0, 2.0, 3.0], model) == [2.0, 4.0, 6.0]
    assert model.calls == 1


@pytest.mark.parametrize("bad", [[0], [255], [17], [3, 200], list(range(0, 256, 16))])
def test_only_the_failing_records_fail(bad: list[int]) -> None:
    rows = [-1.0 if i in bad else float(i) for i in range(256)]
    model = Doubler()
    answers = predict_each(rows, model)
    failed = [i for i, a in enumerate(answers) if isinstance(a, RecordFailed)]
    assert failed == bad
    assert [a for a in answers if not isinstance(a, RecordFailed)] == [
        2 * r for r in rows if r >= 0
    ]
    assert "ValueError: negative input" in str(answers[bad[0]])
    if len(bad) == 1:
        assert model.calls <= 1 + 2 * 8  # log2(256) levels, two halves each


def test_a_record_at_fault_is_a_400_naming_it_else_its_own_500() -> None:
    answers = predict_each([1.0, -1.0], Doubler())
    error = request_error(answers)
    assert isinstance(error, bentoml.exceptions.InvalidArgument)
    assert "[1]: the model cannot take this record (ValueError: negative input)" in str(error)
    assert request_error(predict_each([1.0, 2.0], Doubler())) is None
    error = request_error(predict_each([-1.0], Doubler(KeyError)))
    assert isinstance(error, bentoml.exceptions.InternalServerError)
    assert "record 0" in str(error)


def test_a_wrong_number_of_answers_is_a_bug_not_a_record_failure() -> None:
    with pytest.raises(RuntimeError, match="2 records got 1 answers"):
        predict_each([1.0, 2.0], lambda rows: [0.0])


def test_merged_requests_make_the_frame_their_records_make() -> None:
    """Requests read as checked frames, merged by the batcher (their runs in a row, then cut
    in halves as a failed call is): each part's frame is the one its records make, dtypes
    included, where one request holds a missing value the other does not."""
    import pandas as pd

    from inference.contract import Column, Contract, records_frame
    from serving.batching import CheckedRows

    contract = Contract(
        [Column("year", "long", required=False), Column("sex", "string", required=False)]
    )
    first = [{"year": 2007, "sex": "f"}, {"year": 2008, "sex": "m"}, {"year": 2009, "sex": "f"}]
    second = [{"year": None, "sex": None}, {"year": 2010, "sex": "m"}]
    parts = [CheckedRows.of(records_frame(first, contract))]
    parts.append(CheckedRows.of(records_frame(second, contract)))
    merged = CheckedRows.merged(parts)
    assert len(merged) == 5
    for start, stop in ((0, 5), (0, 3), (1, 4), (3, 5), (2, 3), (3, 9)):
        expected = records_frame((first + second)[start:stop], contract)
        pd.testing.assert_frame_equal(merged[start:stop].frame(), expected)
        assert len(merged[start:stop]) == len(expected)
    assert merged[0:3].frame() is parts[0].runs[0][0]  # a whole request: its own frame


def test_the_batcher_merges_and_cuts_checked_rows_by_request() -> None:
    """BentoML's batcher, through the container registered for CheckedRows: merged requests
    count their rows, and each request gets back its own slice of the answers."""
    import numpy as np
    from bentoml._internal.runner.container import AutoContainer

    from inference.contract import Column, Contract, records_frame
    from serving import bentoml_private
    from serving.batching import CheckedRows

    bentoml_private.batch_checked_rows()
    contract = Contract([Column("x", "double")])
    requests = [
        CheckedRows.of(records_frame([{"x": float(i)} for i in range(n)], contract))
        for n in (3, 1, 2)
    ]
    assert [AutoContainer.get_batch_size(r, 0) for r in requests] == [3, 1, 2]
    batch, indices = AutoContainer.batches_to_batch(requests, 0)
    assert indices == [0, 3, 4, 6]
    assert batch.frame()["x"].tolist() == [0.0, 1.0, 2.0, 0.0, 0.0, 1.0]
    answers = np.arange(6, dtype=np.float64)
    cut = AutoContainer.batch_to_batches(answers, indices, 0)
    assert [part.tolist() for part in cut] == [[0.0, 1.0, 2.0], [3.0], [4.0, 5.0]]


@pytest.mark.parametrize(
    "numbers",
    [
        [1.5],
        [1.5, -0.0, 0.30000000000000004, 1e300, 5e-324, 123456789.125],
        [float("nan"), 2.0, float("inf"), -float("inf")],
        [],
    ],
)
def test_numbers_are_written_as_the_answers_a_dict_each_would_be(numbers: list[float]) -> None:
    import math

    import numpy as np
    import orjson

    from serving.batching import numbers_body

    as_dicts = [{"prediction": n if math.isfinite(n) else None} for n in numbers]
    assert numbers_body(np.array(numbers, dtype=np.float64)) == orjson.dumps(as_dicts)


@pytest.mark.parametrize("calls", [1, 2])
def test_the_batcher_runs_its_calls_at_once_and_merges_what_queued(calls: int) -> None:
    """BentoML's own batcher, as the service patches it: at most ``calls`` model calls run at
    once; the requests that arrive meanwhile wait, then start together as one call, whole."""
    import asyncio

    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    from serving import bentoml_private

    bentoml_private.whole_requests_batching(calls)
    running, most, batches = 0, 0, []

    async def model(items: Sequence[list[int]]) -> list[list[int]]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        batches.append([len(i) for i in items])
        await asyncio.sleep(0.05)
        running -= 1
        return [[2 * x for x in i] for i in items]

    async def main() -> list[list[int]]:
        dispatcher = CorkDispatcher(
            max_latency_in_ms=10_000,
            max_batch_size=100,
            fallback=lambda: None,
            get_batch_size=len,
        )
        call = dispatcher(model)
        first = []
        for k in range(calls):  # one request a call, each started before the next arrives
            first.append(asyncio.create_task(call([k])))
            await asyncio.sleep(0.005)
        later = [asyncio.create_task(call([10 + k, 20 + k])) for k in range(5)]
        answers = await asyncio.gather(*first, *later)
        dispatcher.shutdown()
        return answers

    try:
        answers = asyncio.run(main())
    finally:
        bentoml_private.whole_requests_batching(1)  # as BentoML: one call at a time
    assert answers[:calls] == [[2 * k] for k in range(calls)]
    assert answers[calls:] == [[20 + 2 * k, 40 + 2 * k] for k in range(5)]
    assert most == calls
    assert batches[calls] == [2] * 5  # what queued meanwhile: one call, every request whole
