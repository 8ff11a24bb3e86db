"""The exact fast path at run time: the pipeline's model call (preprocessing included) at a
fraction of scikit-learn's cost, with predictions equal to sklearn's bit for bit, or not used.

It covers the models ``pipeline.train.build_model`` makes: a ``Pipeline(ColumnTransformer,
RandomForestRegressor | RandomForestClassifier)`` whose blocks are SimpleImputer (NaN, then
optionally None), StandardScaler, OneHotEncoder and OrdinalEncoder. The importer builds it
from the fitted model, proves it exact and saves it (``importers.fast``: build, check, save);
this module is what a bento ships to run it: no scikit-learn, no build code.

- **Preprocessing: numpy and dict lookups.** The float64 operations sklearn does, in its
  order: impute, ``(x - mean) / scale``, encode with sklearn's dict semantics
  (docs/fast-path-research.md: no library reproduces the ColumnTransformer exactly at a low
  cost per call).
- **Forest: ``inference.forest``**, a compiled exact tree walk, for every batch size.

An input the fast path cannot reproduce (a float32 column, where sklearn computes in float32;
a non-string category; pd.NA) makes :meth:`FastModel.predict_arrays` return None: the caller lets
sklearn answer that call.

Saved form (in the BentoML model folder, :data:`FILES`): ``fastpath.json`` (version, blocks,
categories, task, classes, sizes) and ``fastpath.npz`` (plain arrays, loaded with
``allow_pickle=False``: the float64 fills, means and scales, so their bit patterns survive,
and the forest's arrays). A fast path saved by another :data:`VERSION` is refused (sklearn
serves, with the reason).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inference.forest import ARRAYS, Forest

VERSION = 2  # 1: treelite GTIL + sklearn's forest in bulk (forest.tl); 2: inference.forest
ENGINE_FAST = "numpy+numba-forest"
ENGINE_SKLEARN = "sklearn"
FILES = ("fastpath.json", "fastpath.npz")
FOREST_PREFIX = "forest_"  # the forest's arrays in fastpath.npz


def is_nan(value: Any) -> bool:
    """Whether ``value`` is a float NaN (what SimpleImputer's default ``missing_values``
    matches in an object column: ``x != x``; None is not NaN)."""
    return isinstance(value, float) and value != value


# --- the fast model --------------------------------------------------------------------------


class FastModel:
    """Preprocessing blocks and a compiled forest (see the module docstring).

    Args:
        spec: What the importer read from the sklearn model (plain values).
        forest: The forest's arrays (``inference.forest.Forest``).
    """

    engine = ENGINE_FAST

    def __init__(self, spec: dict[str, Any], forest: Forest):
        self.spec, self.forest = spec, forest
        self.task: str = spec["task"]
        self.columns: list[str] = spec["columns"]
        classes = spec.get("classes")
        # Object, not numpy's fixed-width text: sklearn's classes_ for string labels.
        self.classes = None if classes is None else np.array(classes, dtype=object)
        self._tables = [_lookup_tables(b) for b in spec["blocks"]]
        # The same lookups for whole columns (a hash table pandas builds once per column: built
        # here, before threads share it).
        self._indexes = [
            [pd.Index(c, dtype=object) for c in b.get("categories", [])] for b in spec["blocks"]
        ]
        for index in (i for block in self._indexes for i in block):
            index.get_indexer(np.array(["", None], dtype=object))
        # A column whose categories are all text: its values are looked up in the table
        # first (all found: text the encoder knows, coded), the careful way only otherwise.
        self._text_tables = [
            [t if all(type(v) is str for v in t) else None for t in tables]
            for tables in self._tables
        ]
        width, wanted = sum(block_width(b) for b in spec["blocks"]), forest.n_features
        if width != wanted:
            raise ValueError(f"the blocks make {width} columns; the forest takes {wanted}")
        outputs = 1 if self.classes is None else len(self.classes)
        if forest.n_outputs != outputs:
            raise ValueError(f"the forest gives {forest.n_outputs} outputs, not {outputs}")

    # preprocessing: records ----------------------------------------------------------------

    def row(self, record: Mapping[str, Any]) -> list[float] | None:
        """One record (a dict as the service's pydantic records give it: None for a missing
        value) -> its ColumnTransformer row, or None to let sklearn answer.

        None in a text field is missing, as ``inference.contract.records_frame`` makes it
        (NaN) for the service's frames.
        """
        out: list[float] = []
        for block, tables in zip(self.spec["blocks"], self._tables, strict=True):
            values = [record.get(c) for c in block["columns"]]
            if block["kind"] == "numeric":
                part = _numeric_row(block, values)
            else:
                values = [np.nan if v is None else v for v in values]
                part = _encoded_row(block, tables, values)
            if part is None:
                return None
            out.extend(part)
        return out

    # preprocessing: frames -------------------------------------------------------------------

    def transform(self, frame: pd.DataFrame) -> np.ndarray | None:
        """A DataFrame -> what the ColumnTransformer makes of it (dense float64), or None to
        let sklearn answer (a dtype sklearn would compute in differently)."""
        parts = []
        for b, block in enumerate(self.spec["blocks"]):
            if block["kind"] == "numeric":
                part = _numeric_matrix(block, frame)
            else:
                part = _encoded_matrix(block, self._indexes[b], self._text_tables[b], frame)
            if part is None:
                return None
            parts.append(part)
        return np.hstack(parts) if len(parts) > 1 else parts[0]

    def category_codes(self, b: int, j: int, values: np.ndarray) -> np.ndarray | None:
        """Codes of ``values`` (an object array) in column ``j`` of block ``b`` (an encoder's),
        as :meth:`transform` finds them (-1: unknown), or None to delegate."""
        block = self.spec["blocks"][b]
        return _codes(block, j, self._indexes[b][j], values, self._text_tables[b][j])

    # the forest ------------------------------------------------------------------------------

    def forest_output(self, X: np.ndarray, threads: int = 1) -> np.ndarray:
        """The forest's raw output for the preprocessed ``X``: (n,) values or (n, k) class
        probabilities, computed as sklearn computes them (``threads``: see
        ``inference.forest.Forest.output``)."""
        out = self.forest.output(X, threads=threads)
        return out if self.task == "classification" else out[:, 0]

    def finish(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(predictions, probabilities or None) from the forest's raw output."""
        if self.task != "classification":
            return raw, None
        # RandomForestClassifier.predict: the class of the first highest probability.
        return self.classes.take(np.argmax(raw, axis=1), axis=0), raw

    def predict_arrays(
        self, frame: pd.DataFrame, threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(predictions, class probabilities or None) for a frame fitted to the contract, or
        None when sklearn must answer this call."""
        X = self.transform(frame)
        return None if X is None else self.finish(self.forest_output(X, threads))

    def predict_arrays_of_records(
        self, records: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """:meth:`predict_arrays` for records (dicts), without pandas: the single-record path."""
        rows = [self.row(r) for r in records]
        if not rows or any(r is None for r in rows):
            return None
        return self.finish(self.forest_output(np.array(rows, dtype=np.float64)))


def load(folder: str | Path) -> FastModel:
    """The fast path saved in ``folder`` (by the importer, in the BentoML model folder).

    Raises:
        ValueError: Files missing or damaged, or saved by another version of this module.
    """
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"fast path files missing in {folder}: {', '.join(missing)}")
    spec = json.loads((folder / FILES[0]).read_text())
    if not isinstance(spec, dict) or spec.get("version") != VERSION:
        version = spec.get("version") if isinstance(spec, dict) else None
        raise ValueError(f"fast path version {version} is not {VERSION}")
    with np.load(folder / FILES[1], allow_pickle=False) as saved:
        arrays = {name: saved[name] for name in saved.files}
    spec = join_arrays(spec, arrays)
    forest = {n: arrays.get(FOREST_PREFIX + n) for n in ARRAYS}
    return FastModel(spec, Forest(forest, spec["n_features"]))


def split_arrays(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The spec without its float64 lists (JSON would keep them too, but npz states the
    dtype), and those lists as arrays."""
    blocks, arrays = [], {}
    for i, block in enumerate(spec["blocks"]):
        block = dict(block)
        if block["kind"] == "numeric":
            for key in ("fill", "mean", "scale"):
                if block[key] is not None:
                    arrays[f"{i}_{key}"] = np.asarray(block[key], dtype=np.float64)
                    block[key] = f"npz:{i}_{key}"
        blocks.append(block)
    return {**spec, "blocks": blocks}, arrays


def join_arrays(spec: dict[str, Any], arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    blocks = []
    for block in spec["blocks"]:
        block = dict(block)
        for key, value in list(block.items()):
            if isinstance(value, str) and value.startswith("npz:"):
                saved = arrays.get(value[4:])
                if saved is None or saved.dtype != np.float64 or saved.ndim != 1:
                    raise ValueError(f"fast path array {value[4:]} missing or not float64")
                block[key] = [float(x) for x in saved]
        blocks.append(block)
    return {**spec, "blocks": blocks}


def block_width(block: dict[str, Any]) -> int:
    """How many columns ``block`` adds to the forest's input."""
    if block["kind"] == "onehot":
        return sum(len(c) for c in block["categories"])
    return len(block["columns"])


# --- the preprocessing arithmetic ------------------------------------------------------------


def _lookup_tables(block: dict[str, Any]) -> list[dict[Any, int]]:
    """Per column, category -> code: sklearn's encoders look values up the same way
    (``_map_to_integer``: a dict, so "a" and None are keys and anything else is unknown)."""
    if block["kind"] == "numeric":
        return []
    return [{v: i for i, v in enumerate(c)} for c in block["categories"]]


def _numeric_row(block: dict[str, Any], values: list[Any]) -> list[float] | None:
    out = []
    for j, v in enumerate(values):
        if v is None or is_nan(v):
            if block["fill"] is None:
                return None
            v = block["fill"][j]
        elif isinstance(v, np.floating | np.complexfloating) and not isinstance(v, np.float64):
            return None  # float32: sklearn would compute in it
        elif not isinstance(v, float | int | np.integer):
            return None
        v = float(v)
        if block["mean"] is not None:
            v = (v - block["mean"][j]) / block["scale"][j]
        out.append(v)
    return out


def _category(block: dict[str, Any], j: int, value: Any) -> Any:
    """The value the encoder sees after the block's imputers, or ``_DELEGATE``."""
    if is_nan(value):
        value = block["nan_fill"][j]
    if value is None and block["none_fill"] is not None:
        value = block["none_fill"][j]
    return value if value is None or isinstance(value, str) else _DELEGATE


_DELEGATE = object()


def _encoded_row(block: dict[str, Any], tables: list[dict[Any, int]], values: list[Any]):
    onehot = block["kind"] == "onehot"
    widths = [len(c) for c in block["categories"]]
    out = [0.0] * sum(widths) if onehot else []
    offset = 0
    for j, value in enumerate(values):
        value = _category(block, j, value)
        if value is _DELEGATE:
            return None
        code = tables[j].get(value)
        if onehot:
            if code is not None:  # unknown: all zeros (handle_unknown="ignore")
                out[offset + code] = 1.0
            offset += widths[j]
        else:
            out.append(block["unknown"] if code is None else float(code))
    return out


def _numeric_matrix(block: dict[str, Any], frame: pd.DataFrame) -> np.ndarray | None:
    # One column at a time: frame[list_of_columns] builds a new frame first, which costs more than
    # the forest's walk of a single record.
    return numeric_block(block, [frame[c].to_numpy() for c in block["columns"]])


def numeric_block(block: dict[str, Any], columns: list[np.ndarray]) -> np.ndarray | None:
    """A numeric block's part of the forest's input from its columns' values (NaN: missing),
    or None to delegate."""
    if not all(c.dtype.kind in "iub" or c.dtype == np.float64 for c in columns):
        return None  # float32, object...: sklearn would compute in another precision
    X = np.column_stack(columns).astype(np.float64)
    missing = np.isnan(X)
    if missing.any():
        if block["fill"] is None:
            return None
        X = np.where(missing, np.asarray(block["fill"]), X)
    if block["mean"] is not None:
        X -= np.asarray(block["mean"])
        X /= np.asarray(block["scale"])
    return X


def _encoded_matrix(
    block: dict[str, Any],
    indexes: list[pd.Index],
    text_tables: list[dict[str, int] | None],
    frame: pd.DataFrame,
) -> np.ndarray | None:
    codes = []
    for j, column in enumerate(block["columns"]):
        values = frame[column]
        if values.dtype != object:
            return None  # pandas' string or category dtypes: not what sklearn saw in training
        codes.append(_codes(block, j, indexes[j], values.to_numpy(), text_tables[j]))
        if codes[-1] is None:
            return None
    return encoded_block(block, codes, len(frame))


def encoded_block(block: dict[str, Any], codes: list[np.ndarray], rows: int) -> np.ndarray:
    """An encoder block's part of the forest's input from its columns' category codes (-1:
    unknown), as :func:`_codes` gives them."""
    onehot = block["kind"] == "onehot"
    widths = [len(c) for c in block["categories"]]
    X = np.zeros((rows, sum(widths) if onehot else len(widths)))
    offset = 0
    for j, found in enumerate(codes):
        if onehot:
            known = np.flatnonzero(found >= 0)
            X[known, offset + found[known]] = 1.0
            offset += widths[j]
        else:
            X[:, j] = np.where(found >= 0, found, block["unknown"])
    return X


def _codes(
    block: dict[str, Any],
    j: int,
    index: pd.Index,
    values: np.ndarray,
    text_table: dict[str, int] | None = None,
):
    """Column ``j``'s category codes (-1: unknown) after the block's imputers, vectorised
    (what ``_category`` and the lookup table give value by value), or None to delegate: a
    missing value that is neither NaN nor None (pd.NA...), or a value that is not a string.

    ``text_table``: the column's table when its categories are all text. Values all found
    there are text (only text equals text) that no imputer changes: their codes are the
    table's, one lookup each."""
    if text_table is not None:
        try:
            codes = np.fromiter(map(text_table.get, values, repeat(-1)), np.intp, len(values))
        except TypeError:  # an unhashable value: the careful way names what to do
            codes = None
        if codes is not None and (not len(codes) or codes.min() >= 0):
            return codes
    if set(map(type, values)) == {str}:  # the usual column: text only, none missing
        return index.get_indexer(values)
    missing = pd.isna(values)
    if missing.any():
        at = np.flatnonzero(missing)
        none = np.array([values[i] is None for i in at], dtype=bool)
        nan = np.array([is_nan(values[i]) for i in at], dtype=bool)
        if not (none | nan).all():
            return None
        values = values.copy()
        values[at[nan]] = block["nan_fill"][j]
        if block["none_fill"] is not None:
            values[at[none]] = block["none_fill"][j]
    present = values[~missing] if missing.any() else values
    if len(present) and pd.api.types.infer_dtype(present, skipna=False) != "string":
        return None
    return index.get_indexer(values)


# --- agreement with sklearn (the importer's gate and the start-up re-check) -------------------


def same_bits(a: Any, b: Any) -> bool:
    """Whether two prediction arrays are equal: floats bit for bit, labels by value."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        if a.dtype.kind != "f" or b.dtype.kind != "f":
            return False
        bits = [np.ascontiguousarray(x, np.float64).view(np.int64) for x in (a, b)]
        return bool(np.array_equal(*bits))
    return bool(np.array_equal(a, b))


def sklearn_predict_arrays(pipeline: Any, frame: Any, task: str):
    """(predictions, probabilities or None) of the sklearn model (or of its forest, for a
    matrix): the reference."""
    # np.errstate: sklearn's finiteness check sums the input, overflowing on huge values.
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", UserWarning)  # feature-name chatter
        proba = pipeline.predict_proba(frame) if task == "classification" else None
        return np.asarray(pipeline.predict(frame)), proba


def service_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with None in text columns as NaN: what the service builds from records
    (``inference.contract.records_frame``), the reference for the record entry."""
    out = frame.copy()
    for column in out.select_dtypes(include="object").columns:
        values = out[column]
        out[column] = values.where(values.notna(), np.nan)
    return out


def matches(got: tuple[Any, Any] | None, want: tuple[Any, Any]) -> bool:
    """Whether the fast path's (predictions, probabilities) are sklearn's; a delegated call
    (None) is no proof of the fast path, so it counts as a difference."""
    if got is None:
        return False
    if want[1] is None:
        return got[1] is None and same_bits(got[0], want[0])
    return same_bits(got[0], want[0]) and got[1] is not None and same_bits(got[1], want[1])


def recorded_predictions(pipeline: Any, frame: pd.DataFrame, task: str) -> dict[str, Any]:
    """sklearn's answers on ``frame`` (the input example) as JSON values (floats round-trip
    exactly): for the frame entry, and for the record entry (the frame as the service makes
    it from records)."""
    return {
        "frame": _as_json(sklearn_predict_arrays(pipeline, frame, task)),
        "records": _as_json(sklearn_predict_arrays(pipeline, service_frame(frame), task)),
    }


def _as_json(predicted: tuple[Any, Any]) -> dict[str, Any]:
    predictions, proba = predicted
    values = [v.item() if hasattr(v, "item") else v for v in np.asarray(predictions).ravel()]
    return {
        "predictions": values,
        "probabilities": None if proba is None else np.asarray(proba).tolist(),
    }


def _from_json(recorded: Any, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    dtype = object if task == "classification" else np.float64
    proba = recorded["probabilities"]
    return (
        np.array(recorded["predictions"], dtype=dtype),
        None if proba is None else np.array(proba, dtype=np.float64),
    )


def gives_recorded_predictions(fast: FastModel, frame: pd.DataFrame) -> bool:
    """Whether ``fast`` gives, on ``frame`` (the input example), the answers sklearn gave at
    import (``spec["expected"]``, :func:`recorded_predictions`), through both entries. Also
    compiles (or loads from numba's cache) the forest's kernel."""
    expected = fast.spec.get("expected")
    if not isinstance(expected, dict):
        return False
    served = service_frame(frame).to_dict("records")
    if not matches(fast.predict_arrays(frame), _from_json(expected["frame"], fast.task)):
        return False
    got = fast.predict_arrays_of_records(served)
    return matches(got, _from_json(expected["records"], fast.task))


def reproduces(fast: FastModel, pipeline: Any, frame: pd.DataFrame) -> bool:
    """Whether ``fast`` gives sklearn's answers for ``frame`` through both entries (frame and
    records). Also compiles (or loads from numba's cache) the forest's kernel: the service
    runs it at start-up on the input example."""
    if not matches(fast.predict_arrays(frame), sklearn_predict_arrays(pipeline, frame, fast.task)):
        return False
    served = service_frame(frame)
    got = fast.predict_arrays_of_records(served.to_dict("records"))
    return matches(got, sklearn_predict_arrays(pipeline, served, fast.task))
