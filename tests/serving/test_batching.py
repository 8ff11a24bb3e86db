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
    """Requests read as checked frames, merged by the batcher (their items in a row, then cut
    in halves as a failed call is): each part's frame is the one its records make, dtypes
    included, where one request holds a missing value the other does not."""
    import pandas as pd

    from inference.contract import Column, Contract, records_frame
    from serving.batching import checked_rows, merged_frame

    contract = Contract(
        [Column("year", "long", required=False), Column("sex", "string", required=False)]
    )
    first = [{"year": 2007, "sex": "f"}, {"year": 2008, "sex": "m"}, {"year": 2009, "sex": "f"}]
    second = [{"year": None, "sex": None}, {"year": 2010, "sex": "m"}]
    items = checked_rows(records_frame(first, contract))
    items += checked_rows(records_frame(second, contract))
    for start, stop in ((0, 5), (0, 3), (1, 4), (3, 5), (2, 3)):
        expected = records_frame((first + second)[start:stop], contract)
        pd.testing.assert_frame_equal(merged_frame(items[start:stop]), expected)
