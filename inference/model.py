"""A loaded model and its contract: what the service, the clients, Spark, the importer and the
pipeline's evaluation all predict with.

Every call goes through the exact fast path (``inference.fastpath``) when the model has one
that was proven bit-exact at import, and through the native sklearn Pipeline otherwise (or
for an input the fast path delegates): the answers are the same either way.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inference import fastpath
from inference.constants import INPUT_EXAMPLE
from inference.contract import TYPES, Contract, coerce, read_contract, records_frame
from inference.errors import TagserveError, one_line
from inference.loading import load_pipeline
from inference.strict_json import plain

logger = logging.getLogger("tagserve.inference")
# Above this many records a frame is built: per-record Python rows cost a little per row, a
# frame a fixed cost that the columnar path wins back past a few hundred rows (measured in
# docs/fast-path-research.md); the bound stays below that point.
RECORD_ENTRY_MAX_ROWS = 128


@dataclass
class LoadedModel:
    """The native scikit-learn Pipeline of an exported model, with its contract, and its
    exact fast path when it has one (``fast``; ``fast_report`` says why or why not).

    ``predict``, ``predict_proba``, ``predict_arrays`` and ``predict_json`` take frames already
    fitted to the contract (``inference.contract.validate`` or ``coerce``); ``predict_records``
    takes records.
    """

    contract: Contract
    path: Path
    fast: fastpath.FastModel | None = None
    fast_report: dict[str, Any] = field(default_factory=dict)
    # Threads of the fast path's forest for frames (offline scoring; the service keeps 1: a
    # worker per core). Each row is computed alone, so the answers do not depend on it.
    threads: int = 1
    # The sklearn Pipeline; None until first needed when loaded with lazy=True.
    loaded_pipeline: Any = field(default=None, repr=False)
    _loading: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def pipeline(self) -> Any:
        """The native sklearn Pipeline, loaded (by the trust rules of ``inference.loading``)
        on first use when the model was loaded lazily (once, whichever thread asks first)."""
        if self.loaded_pipeline is None:
            with self._loading:
                if self.loaded_pipeline is None:
                    self.loaded_pipeline = load_pipeline(self.path)
        return self.loaded_pipeline

    @property
    def task(self) -> str:
        return self.contract.task

    @property
    def classes(self) -> list[Any] | None:
        if self.fast is not None:
            classes = self.fast.classes
        else:
            classes = getattr(self.pipeline, "classes_", None)
        return [plain(c) for c in classes] if classes is not None else None

    @property
    def engine(self) -> str:
        """What computes the predictions (for ``/metadata`` and logs)."""
        return self.fast.engine if self.fast is not None else fastpath.ENGINE_SKLEARN

    def predict_arrays(
        self, X: pd.DataFrame, with_proba: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(predictions, class probabilities or None) for the rows of ``X``: one model call
        on the fast path, which gives both at once (sklearn is asked for the probabilities
        only ``with_proba``)."""
        got = self.fast.predict_arrays(X, threads=self.threads) if self.fast is not None else None
        if got is None:
            got = self._sklearn_predict_arrays(X, with_proba)
        return np.asarray(got[0]).ravel(), got[1]

    def _sklearn_predict_arrays(
        self, X: pd.DataFrame, with_proba: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # feature-name chatter
            predicted = np.asarray(self.pipeline.predict(X))
            proba = None
            classifier = self.task == "classification" and hasattr(self.pipeline, "predict_proba")
            if with_proba and classifier:
                proba = np.asarray(self.pipeline.predict_proba(X))
        return predicted, proba

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_arrays(X, with_proba=False)[0]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray | None:
        """Class probabilities (columns in ``classes`` order), or None for a regressor."""
        return self.predict_arrays(X)[1]

    def predict_json(self, X: pd.DataFrame) -> list[dict[str, Any]]:
        """One JSON-able prediction per row: ``{"prediction": ...}``, plus ``"probabilities"``
        ({class as text: probability}) for a classifier."""
        return self.json_predictions(*self.predict_arrays(X))

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`predict_json` for records whose values have their column's Python type (the
        service's pydantic records), with no DataFrame on the fast path: building one costs far
        more than the forest's walk of a few records."""
        few = len(records) <= RECORD_ENTRY_MAX_ROWS
        if self.fast is not None and few and self._record_entry_exact():
            got = self.fast.predict_arrays_of_records(records)
            if got is not None:
                return self.json_predictions(*got)
        return self.predict_json(records_frame(records, self.contract))

    def _record_entry_exact(self) -> bool:
        # The column types the record entry builds exactly as records_frame does (the type
        # table's record_entry): other models answer records through the frame.
        return all(TYPES[c.type].record_entry for c in self.contract.columns)

    def json_predictions(self, predicted: Any, proba: np.ndarray | None) -> list[dict[str, Any]]:
        # Whole arrays to Python values at once (tolist): a conversion per value cost as much
        # as the forest's walk on large requests.
        flat = np.asarray(predicted).ravel()
        finite = flat.dtype.kind == "f" and bool(np.isfinite(flat).all())
        values = flat.tolist() if finite else plain(flat)
        if proba is None:
            return [{"prediction": p} for p in values]
        names = [str(c) for c in self.classes or []]
        return [
            {"prediction": p, "probabilities": dict(zip(names, row, strict=True))}
            for p, row in zip(values, np.asarray(proba, dtype=np.float64).tolist(), strict=True)
        ]


def input_example(folder: Path, contract: Contract) -> pd.DataFrame:
    """The model's input example (MLflow's ``input_example.json``) fitted to the contract.

    Raises:
        ValueError: Not a table (``{"columns": [...], "data": [[...], ...]}``).
        InputError: Values that do not fit the contract.
    """
    spec = json.loads((Path(folder) / INPUT_EXAMPLE).read_text())
    if not isinstance(spec, dict) or not {"columns", "data"} <= set(spec):
        raise ValueError("the input example is not a table of columns and data")
    return coerce(pd.DataFrame(spec["data"], columns=spec["columns"]), contract)


def load_model(
    folder: str | Path,
    contract: Contract | None = None,
    fast_folder: str | Path | None = None,
    lazy: bool = False,
) -> LoadedModel:
    """The exported MLflow model at ``folder``, loaded by the trust rules of
    ``inference.loading`` (raises ``ModelRefused``).

    ``fast_folder``: the fast path the importer saved in the BentoML model (and proved exact
    on the test data, input example and edge cases). It is re-checked here on the input
    example, which is cheap and compiles its forest kernel (or loads it from numba's cache),
    and left unused (sklearn serves, with a warning) if it is not exact.

    ``lazy`` (offline scoring): with a fast path, the sklearn Pipeline is loaded only when a
    call needs it (an input the fast path delegates), and the re-check compares the fast
    path with the answers sklearn gave on the input example at import (recorded in the fast
    path): importing scikit-learn and skops is the slow part of a command's start-up.
    """
    folder = Path(folder)
    contract = contract or read_contract(folder)
    model = LoadedModel(contract=contract, path=folder)
    if lazy and fast_folder is not None:
        model.fast, model.fast_report = _recorded_fast_path(model, Path(fast_folder))
        if model.fast is not None:
            return model
    model.loaded_pipeline = load_pipeline(folder)
    if fast_folder is None:
        model.fast_report = {"engine": fastpath.ENGINE_SKLEARN, "reason": "no fast path saved"}
        return model
    model.fast, model.fast_report = _exact_fast_path(model, Path(fast_folder))
    if model.fast is None:
        logger.warning("%s: served by scikit-learn: %s", folder, model.fast_report["reason"])
    return model


def _exact_fast_path(
    model: LoadedModel, fast_folder: Path
) -> tuple[fastpath.FastModel | None, dict[str, Any]]:
    """The saved fast path of ``model`` if it reproduces sklearn on the input example."""
    steps = getattr(model.pipeline, "steps", None)
    if not steps:
        return None, _not_used("the model is not a scikit-learn Pipeline")
    try:
        fast = fastpath.load(fast_folder)
        example = input_example(model.path, model.contract)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, TagserveError) as exc:
        return None, _not_used(f"cannot load the fast path: {exc}")
    columns = getattr(steps[0][1], "feature_names_in_", [])
    if fast.task != model.task or fast.columns != [str(c) for c in columns]:
        return None, _not_used("the fast path was saved for another model")
    try:
        exact = fastpath.reproduces(fast, model.pipeline, example)
    except Exception as exc:  # a damaged saved spec may fail in any way: sklearn serves
        return None, _not_used(f"the fast path fails on the input example: {one_line(exc)}")
    if not exact:
        return None, _not_used("the fast path differs from scikit-learn on the input example")
    report = {"engine": fast.engine, "exact": True, "rows_checked": len(example)}
    return fast, {**report, "checked_on": {"input_example": len(example)}}


def _recorded_fast_path(
    model: LoadedModel, fast_folder: Path
) -> tuple[fastpath.FastModel | None, dict[str, Any]]:
    """The saved fast path of ``model`` if it gives, on the input example, the answers the
    importer recorded from sklearn (no sklearn needed)."""
    try:
        fast = fastpath.load(fast_folder)
        example = input_example(model.path, model.contract)
        if fast.task != model.task or fast.columns != model.contract.features:
            return None, _not_used("the fast path was saved for another model")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, TagserveError) as exc:
        return None, _not_used(f"cannot load the fast path: {exc}")
    try:
        exact = fastpath.gives_recorded_predictions(fast, example)
    except Exception as exc:  # a damaged saved spec may fail in any way: sklearn serves
        return None, _not_used(f"the fast path fails on the input example: {one_line(exc)}")
    if not exact:
        return None, _not_used("the fast path differs from the answers recorded at import")
    report = {"engine": fast.engine, "exact": True, "rows_checked": len(example)}
    return fast, {**report, "checked_on": {"input_example (recorded)": len(example)}}


def _not_used(reason: str) -> dict[str, Any]:
    return {"engine": fastpath.ENGINE_SKLEARN, "exact": False, "reason": reason}
