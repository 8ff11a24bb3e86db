"""Adaptive batching without shared failure: a model call over the records of several merged
requests that fails is split, so that only the request(s) holding the record(s) it fails on
fail, and every other gets its answers.

BentoML 1.4 merges concurrent ``predict_batch`` requests into one list, calls the API once,
and cuts the returned list back into one slice per request (``DefaultContainer``); an
exception fails every merged request alike (``CorkDispatcher.outbound_call``). So the API
answers every record it can, puts a :class:`RecordFailed` where it cannot, and the API's
output spec (:func:`build_answers_output`) turns a slice holding one into that request's own
error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import bentoml

from serving.bentoml_private import IORootModel

logger = logging.getLogger("bentoml.service.tagserve")

Row = TypeVar("Row")
Answer = TypeVar("Answer")

# What a model raises on an input it cannot take (scikit-learn's input checks raise
# ValueError; a cast out of range OverflowError): the record's fault, answered 400.
INPUT_FAULTS = (ValueError, ArithmeticError)


def described(error: BaseException) -> str:
    """``error`` as one line, with its type (it comes from the model, not from tagserve)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


class RecordFailed(Exception):
    """Where a record's answer would be: the model failed on this record on its own."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(described(error))
        self.client_fault = isinstance(error, INPUT_FAULTS)


def answer_each(
    rows: Sequence[Row], answer: Callable[[Sequence[Row]], list[Answer]]
) -> list[Answer | RecordFailed]:
    """``answer(rows)``, one answer per row; if it raises, the rows split in halves and
    answered again, down to single rows: a row that fails alone gets a :class:`RecordFailed`,
    every other row its answer. One failing row among n costs about 2·log2(n) more calls."""
    try:
        answers = answer(rows)
    except Exception as exc:
        if len(rows) == 1:
            return [RecordFailed(exc)]
        logger.warning(
            "a model call over %d records failed (%s); answering them in halves",
            len(rows),
            described(exc),
        )
        return _in_halves(rows, answer)
    return _checked(rows, answers)


def _in_halves(
    rows: Sequence[Row], answer: Callable[[Sequence[Row]], list[Answer]]
) -> list[Answer | RecordFailed]:
    middle = len(rows) // 2
    out: list[Answer | RecordFailed] = []
    for half in (rows[:middle], rows[middle:]):
        try:
            answers = answer(half)
        except Exception as exc:
            out += [RecordFailed(exc)] if len(half) == 1 else _in_halves(half, answer)
        else:
            out += _checked(half, answers)
    return out


def _checked(rows: Sequence[Any], answers: Sequence[Answer]) -> list[Answer]:
    if len(answers) != len(rows):  # a bug, not a record's fault: fails the whole call
        raise RuntimeError(f"{len(rows)} records got {len(answers)} answers")
    return list(answers)


def request_error(
    answers: Sequence[Any], indexed: bool = True
) -> bentoml.exceptions.BentoMLException | None:
    """The error of a request whose answers hold a :class:`RecordFailed` (the first one,
    named by its index in the request unless not ``indexed``): 400 if the record is at fault,
    else 500; or None."""
    for index, item in enumerate(answers):
        if isinstance(item, RecordFailed):
            where = f"[{index}]: " if indexed else ""
            if item.client_fault:
                return bentoml.exceptions.InvalidArgument(
                    f"invalid input: {where}the model cannot take this record ({item})"
                )
            logger.error("the model failed on record [%d] of a request: %s", index, item)
            return bentoml.exceptions.InternalServerError(f"the model failed on record {index}")
    return None


def build_answers_output(answers: Any) -> type[IORootModel]:
    """The output spec of a batchable API returning ``answers`` (e.g. ``list[Prediction]``):
    BentoML's own, except that a request whose slice of the merged answers holds a
    :class:`RecordFailed` is answered with :func:`request_error`."""

    class AnswersOutput(IORootModel[answers]):
        @classmethod
        async def to_http_response(cls, obj: Any, serde: Any) -> Any:
            error = request_error(obj) if isinstance(obj, list) else None
            if error is not None:
                raise error
            return await super().to_http_response(obj, serde)

    return AnswersOutput
