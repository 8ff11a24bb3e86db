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

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import bentoml
import numpy as np
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


class CheckedRows:
    """Rows of requests' checked input frames, as BentoML's adaptive batcher handles a
    batchable API's input: one request's rows (:meth:`of`), several requests' merged
    (:class:`serving.bentoml_private.CheckedRowsContainer`), cut back per request or in halves
    (``rows[a:b]``). Held as runs ``(frame, start, stop)``: merging and cutting touch a run per
    request, never a row."""

    __slots__ = ("runs", "length")

    def __init__(self, runs: list[tuple[Any, int, int]]) -> None:
        self.runs = runs
        self.length = sum(stop - start for _, start, stop in runs)

    @classmethod
    def of(cls, frame: Any) -> CheckedRows:
        """A request's checked frame, whole."""
        return cls([(frame, 0, len(frame))])

    @classmethod
    def merged(cls, parts: Sequence[CheckedRows]) -> CheckedRows:
        return cls([run for part in parts for run in part.runs])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, part: slice) -> CheckedRows:
        if not isinstance(part, slice) or part.step not in (None, 1):
            raise TypeError("checked rows are cut by slices of consecutive rows")
        first, last, _ = part.indices(self.length)
        runs, offset = [], 0
        for frame, start, stop in self.runs:
            a, b = max(first - offset, 0), min(last - offset, stop - start)
            if a < b:
                runs.append((frame, start + a, start + b))
            offset += stop - start
        return CheckedRows(runs)

    def frame(self) -> Any:
        """The input frame of these rows, in order: a request's own frame when they are one
        whole request, else its columns' slices joined (a column holding a missing value in
        one request takes the other requests' values in its dtype, as
        ``inference.contract.records_frame`` would)."""
        import pandas as pd

        if len(self.runs) == 1:
            frame, start, stop = self.runs[0]
            if start == 0 and stop == len(frame):
                return frame
            return frame.iloc[start:stop].reset_index(drop=True)
        names = list(self.runs[0][0].columns)
        return pd.DataFrame(
            {n: np.concatenate([f[n].to_numpy()[a:b] for f, a, b in self.runs]) for n in names}
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
    rows: Sequence[Row],
    predict: Callable[[Sequence[Row]], list[Prediction]],
    failed: Exception | None = None,
) -> list[Prediction | RecordFailed]:
    """``predict(rows)``, one prediction per row; if it raises (or it already did:
    ``failed``), the rows split in halves and predicted again, down to single rows: a row that
    fails alone gets a :class:`RecordFailed`, every other row its prediction. One failing row
    among n costs about 2·log2(n) more calls."""
    try:
        if failed is not None:
            raise failed
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


def predict_merged(state: Any, records: Any, choice: str) -> Any:
    """The records of merged requests (:class:`CheckedRows`, as the batchable APIs' input
    spec reads them; or records, from a caller in this process) predicted by the worker's
    ``state`` on the model route ``choice`` (``serving.routing``): the model's answers
    (``ModelChoice.predict_answers``: a regressor's numbers as an array, else a dict a
    record); if the call over them all fails, one dict or :class:`RecordFailed` a record
    (:func:`predict_each`). Recorded for monitoring."""
    if not len(records):
        return []
    state.counts.model_calls += 1
    state.counts.rows += len(records)
    rows = records
    if type(records) is not CheckedRows:  # records of a caller in this process
        from inference.contract import records_frame

        dumped = [r if isinstance(r, dict) else r.model_dump(by_alias=True) for r in records]
        rows = CheckedRows.of(records_frame(dumped, state.contract))
    # The HTTP answer may be an array (written by numbers_body); a caller in this process
    # gets the dicts the API's type says.
    predict = state.models.predict_answers if rows is records else state.models.predict_json
    whole = rows.frame()
    try:
        answers = predict(whole, choice)
    except Exception as exc:  # a record's fault, or the model's: find whose
        answers = predict_each(
            rows, lambda part: state.models.predict_json(part.frame(), choice), failed=exc
        )
    state.monitor.record(whole, answers, route=choice)
    return answers


def request_error(
    predictions: Sequence[Any], indexed: bool = True
) -> bentoml.exceptions.BentoMLException | None:
    """The error of a request whose predictions hold a :class:`RecordFailed` (the first one,
    named by its index in the request unless not ``indexed``): 400 if the record is at fault,
    else 500; or None."""
    if isinstance(predictions, np.ndarray) or RecordFailed not in set(map(type, predictions)):
        return None  # the usual answers, told apart in C
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
    ``list[Prediction]``, its schema): a request's slice of the merged answers
    (:func:`predict_merged`) written with orjson, or, if it holds a :class:`RecordFailed`,
    that request's :func:`request_error`."""

    class PredictionsOutput(IORootModel[predictions]):
        @classmethod
        async def to_http_response(cls, obj: Any, serde: Any) -> Any:
            if isinstance(obj, np.ndarray):
                return Response(numbers_body(obj), media_type=JSON)
            if not isinstance(obj, list):
                return await super().to_http_response(obj, serde)
            error = request_error(obj)
            if error is not None:
                raise error
            # A pydantic model per answer cost more than the model call on large requests.
            return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), media_type=JSON)

    return PredictionsOutput


def numbers_body(numbers: np.ndarray) -> bytes:
    """A regressor's answers, ``[{"prediction": number}, ...]``, written from the float64
    array at C speed: orjson writes the numbers as it writes them in dicts (a non-finite one as
    null), and no number holds a comma."""
    listed = orjson.dumps(numbers, option=orjson.OPT_SERIALIZE_NUMPY)
    if len(numbers) == 0:
        return listed
    return b'[{"prediction":' + listed[1:-1].replace(b",", b'},{"prediction":') + b"}]"


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
