"""Adaptive batching without shared failure: a model call over the records of several merged
requests that fails is split, so that only the request(s) holding the record(s) it fails on
fail, and every other gets its predictions.

BentoML 1.4 merges concurrent ``predict_batch`` requests into one list, calls the API once,
and cuts the returned list back into one slice per request (``DefaultContainer``); an
exception fails every merged request alike (``CorkDispatcher.outbound_call``). So the API
predicts every record it can, puts a :class:`RecordFailed` where it cannot, and the API's
output spec (:func:`build_predictions_output`) turns a slice holding one into that request's own
error.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import bentoml
import orjson
from starlette.responses import Response

from serving.bentoml_private import IORootModel

logger = logging.getLogger("bentoml.service.tagserve")

Row = TypeVar("Row")
Prediction = TypeVar("Prediction")

# What a model raises on an input it cannot take (scikit-learn's input checks raise
# ValueError; a cast out of range OverflowError): the record's fault, answered 400.
INPUT_FAULTS = (ValueError, ArithmeticError)
JSON = "application/json"


# One record of a request read as the request's checked input frame: (the frame, the row).
# A batchable API's input is a list of these, which BentoML's batcher merges with other
# requests' lists and cuts back per request like any list. Plain tuples: made a thousand at a
# time in C, where a NamedTuple's constructor runs Python code per record.
CheckedRow = tuple  # (frame: the request's frame fitted to the contract, row: int)


def checked_rows(frame: Any) -> list[tuple[Any, int]]:
    """A request's checked frame as the batcher's items, one per record."""
    return list(zip(itertools.repeat(frame), range(len(frame))))


def merged_frame(rows: Sequence[tuple[Any, int]]) -> Any:
    """The input frame of merged requests' ``rows``, in order: the request's own frame when the
    rows are one whole request, else its columns' slices joined (a column holding a missing
    value in one request takes the other requests' values in its dtype, as
    ``inference.contract.records_frame`` would)."""
    import numpy as np
    import pandas as pd

    runs: list[tuple[Any, int, int]] = []  # consecutive rows of one request: frame, start, stop
    frame, start, stop = None, 0, 0
    for of, row in rows:
        if of is frame and row == stop:
            stop += 1
            continue
        if frame is not None:
            runs.append((frame, start, stop))
        frame, start, stop = of, row, row + 1
    runs.append((frame, start, stop))
    if len(runs) == 1:
        if start == 0 and stop == len(frame):
            return frame
        return frame.iloc[start:stop].reset_index(drop=True)
    names = list(frame.columns)
    return pd.DataFrame(
        {n: np.concatenate([f[n].to_numpy()[a:b] for f, a, b in runs]) for n in names}
    )


def described(error: BaseException) -> str:
    """``error`` as one line, with its type (it comes from the model, not from tagserve)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


class RecordFailed(Exception):
    """Where a record's prediction would be: the model failed on this record on its own."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(described(error))
        self.error = error
        self.client_fault = isinstance(error, INPUT_FAULTS)


def predict_each(
    rows: Sequence[Row], predict: Callable[[Sequence[Row]], list[Prediction]]
) -> list[Prediction | RecordFailed]:
    """``predict(rows)``, one prediction per row; if it raises, the rows split in halves and
    predicted again, down to single rows: a row that fails alone gets a :class:`RecordFailed`,
    every other row its prediction. One failing row among n costs about 2·log2(n) more
    calls."""
    try:
        predictions = predict(rows)
    except Exception as exc:
        if len(rows) == 1:
            return [RecordFailed(exc)]
        logger.warning(
            "a model call over %d records failed (%s); answering them in halves",
            len(rows),
            described(exc),
        )
        return _in_halves(rows, predict)
    return _one_per_row(rows, predictions)


def _in_halves(
    rows: Sequence[Row], predict: Callable[[Sequence[Row]], list[Prediction]]
) -> list[Prediction | RecordFailed]:
    middle = len(rows) // 2
    out: list[Prediction | RecordFailed] = []
    for half in (rows[:middle], rows[middle:]):
        try:
            predictions = predict(half)
        except Exception as exc:
            out += [RecordFailed(exc)] if len(half) == 1 else _in_halves(half, predict)
        else:
            out += _one_per_row(half, predictions)
    return out


def _one_per_row(rows: Sequence[Any], predictions: Sequence[Prediction]) -> list[Prediction]:
    if len(predictions) != len(rows):  # a bug, not a record's fault: fails the whole call
        raise RuntimeError(f"{len(rows)} records got {len(predictions)} answers")
    return list(predictions)


def predict_merged(state: Any, records: Sequence[Any], choice: str) -> list[Any]:
    """The records of merged requests (:data:`CheckedRow`, as the batchable APIs' input
    spec reads them; or records, from a caller in this process) predicted by the worker's
    ``state`` on the model route ``choice`` (``serving.routing``): one prediction (a dict)
    each, or a :class:`RecordFailed` (:func:`predict_each`). Recorded for monitoring."""
    if not records:
        return []
    state.counts.model_calls += 1
    state.counts.rows += len(records)
    rows = records
    if not all(type(r) is CheckedRow for r in records):  # records of a caller in this process
        from inference.contract import records_frame

        dumped = [r if isinstance(r, dict) else r.model_dump(by_alias=True) for r in records]
        rows = checked_rows(records_frame(dumped, state.contract))
    whole = merged_frame(rows)

    def predict(part: Sequence[tuple[Any, int]]) -> list[Any]:
        frame = whole if len(part) == len(rows) else merged_frame(part)
        return state.models.predict_json(frame, choice)

    predicted = predict_each(rows, predict)
    state.monitor.record(whole, predicted, route=choice)
    return predicted


def request_error(
    predictions: Sequence[Any], indexed: bool = True
) -> bentoml.exceptions.BentoMLException | None:
    """The error of a request whose predictions hold a :class:`RecordFailed` (the first one,
    named by its index in the request unless not ``indexed``): 400 if the record is at fault,
    else 500; or None."""
    for index, item in enumerate(predictions):
        if isinstance(item, RecordFailed):
            where = f"[{index}]: " if indexed else ""
            if item.client_fault:
                return bentoml.exceptions.InvalidArgument(
                    f"invalid input: {where}the model cannot take this record ({item})"
                )
            logger.error("the model failed on record [%d] of a request: %s", index, item)
            return bentoml.exceptions.InternalServerError(f"the model failed on record {index}")
    return None


def build_predictions_output(predictions: Any) -> type[IORootModel]:
    """The output spec of a batchable API returning ``predictions`` (e.g.
    ``list[Prediction]``, its schema): a request's slice of the merged predictions (dicts of
    plain values, as ``LoadedModel.predict_json`` gives them) written with orjson, or, if it
    holds a :class:`RecordFailed`, that request's :func:`request_error`."""

    class PredictionsOutput(IORootModel[predictions]):
        @classmethod
        async def to_http_response(cls, obj: Any, serde: Any) -> Any:
            if not isinstance(obj, list):
                return await super().to_http_response(obj, serde)
            error = request_error(obj)
            if error is not None:
                raise error
            # A pydantic model per answer cost more than the model call on large requests.
            return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), media_type=JSON)

    return PredictionsOutput


def batchable_api(
    path: str,
    choice: str,
    doc: str,
    records_type: Any,
    prediction_type: Any,
    *,
    contract: Any,
    settings: Any,
) -> Any:
    """The batchable API on ``path``: ``records_type`` (the API's body, a bounded list of
    records of ``contract``) -> ``list[prediction_type]``, predicted by
    ``self.predict_merged(records, choice)`` (``choice``: the model route,
    ``serving.routing``); named for the last part of ``path``. Every batchable API of the
    service is made here, with the settings' batching bounds, the input spec that reads a
    body as checked columns, and the output spec that fails only the request a record
    belongs to."""
    from serving.schema import build_records_input

    def api(self: Any, records: records_type, /) -> list[prediction_type]:  # type: ignore[valid-type]
        return self.predict_merged(records, choice)

    api.__name__ = api.__qualname__ = path.rsplit("/", 1)[-1]
    api.__doc__ = doc
    return bentoml.api(
        route=path,
        batchable=True,
        max_batch_size=settings.max_batch_size,
        max_latency_ms=settings.max_latency_ms,
        input_spec=build_records_input(records_type, contract, settings.max_rows),
        output_spec=build_predictions_output(list[prediction_type]),
    )(api)
