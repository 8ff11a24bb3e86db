"""The exact fast path: the pipeline's model call (preprocessing included) at a fraction of
scikit-learn's per-call cost, with predictions equal to sklearn's bit for bit, or not used.

It covers the models ``pipeline.train.build_model`` makes: a ``Pipeline(ColumnTransformer,
RandomForestRegressor | RandomForestClassifier)`` whose blocks are SimpleImputer (NaN, then
optionally None), StandardScaler, OneHotEncoder and OrdinalEncoder. Anything else (TF-IDF,
another estimator, ``drop=``, infrequent categories...) makes :func:`build` return the reason,
and the model is served by sklearn as before.

Engines, and why these:

- **Preprocessing: numpy and dict lookups, written here.** No library reproduces the
  ColumnTransformer exactly at a low cost per call (docs/fast-path-research.md): sklearn
  itself costs about 2.7 ms per call; skl2onnx cannot convert a string SimpleImputer and
  onnxruntime has no float64 imputer. The code does the float64 operations sklearn does, in
  its order: impute, ``(x - mean) / scale``, encode with sklearn's dict semantics.
- **Forest, small batches: treelite's GTIL** (``nthread=1``), about 0.05 ms per call. It
  compares the float64 thresholds with the input rounded to float32 and widened back (as
  sklearn's trees do), and sums the trees in order before dividing by their count (as sklearn
  with ``n_jobs=1``), so it is exact; ONNX Runtime is not (float32 leaves).
- **Forest, batches above ``bulk_rows``: sklearn's own forest** on the fast-preprocessed
  matrix (exact by construction), since GTIL costs 7-8x sklearn per row in bulk. TL2cgen (a
  compiled forest) would be faster in bulk but needs gcc at import time (minutes and GBs for
  the diamonds forest) and a glibc match between the importing machine and the image: skipped.

An input the fast path cannot reproduce (a float32 column, where sklearn computes in float32;
a non-string category; pd.NA) makes :meth:`FastModel.outputs` return None: the caller lets
sklearn answer that call. :func:`check_exact` proves exactness on real rows; the importer
runs it on the model's test data and input example and saves the fast path only when exact.

Saved form (:meth:`FastModel.save`, in the BentoML model folder): ``fastpath.json`` (blocks,
categories, task, classes, ``bulk_rows``), ``fastpath.npz`` (the float64 fills, means and
scales, so their bit patterns survive) and ``forest.tl`` (the treelite checkpoint).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

VERSION = 1
# GTIL beats sklearn's forest below about this many rows: measured 32-64 for the diamonds
# forest (docs/fast-path-research.md); :func:`calibrate` measures it per model at import.
BULK_ROWS = 64
CALIBRATION_SIZES = (1, 8, 16, 32, 64, 128, 256, 512)
ENGINE_FAST = "numpy+treelite-gtil"
ENGINE_BULK = "numpy+sklearn-forest"
ENGINE_SKLEARN = "sklearn"
FILES = ("fastpath.json", "fastpath.npz", "forest.tl")


def _is_nan(value: Any) -> bool:
    """Whether ``value`` is a float NaN (what SimpleImputer's default ``missing_values``
    matches in an object column: ``x != x``; None is not NaN)."""
    return isinstance(value, float) and value != value


# --- build: the fitted sklearn model -> a spec of plain values ----------------------------------


def _imputer_fill(step: Any, kind: str) -> tuple[str, list[Any]] | str:
    """``("nan"|"none", fills)`` for a SimpleImputer, or why the fast path cannot copy it."""
    if step.add_indicator:
        return "SimpleImputer with add_indicator"
    if _is_nan(step.missing_values):
        missing = "nan"
    elif step.missing_values is None and kind == "category":
        missing = "none"
    else:
        return f"SimpleImputer(missing_values={step.missing_values!r})"
    fills = list(step.statistics_)
    if kind == "number":
        if any(_is_nan(float(f)) for f in fills):
            return "an all-missing column (sklearn drops it)"
        return missing, [float(f) for f in fills]
    if any(not isinstance(f, str) for f in fills):
        return "an imputer whose fill is not a string"
    return missing, fills


def _numeric_block(name: str, columns: list[str], steps: list[Any]) -> dict[str, Any] | str:
    """A block of numbers: [SimpleImputer(NaN)] [StandardScaler], in that order."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    block: dict[str, Any] = {"kind": "numeric", "columns": columns, "fill": None}
    block.update(mean=None, scale=None)
    for step in steps:
        if isinstance(step, SimpleImputer) and block["fill"] is None and block["mean"] is None:
            fill = _imputer_fill(step, "number")
            if isinstance(fill, str) or fill[0] != "nan":
                return f"{name}: {fill if isinstance(fill, str) else 'a None imputer on numbers'}"
            block["fill"] = fill[1]
        elif isinstance(step, StandardScaler) and block["mean"] is None:
            if step.with_mean != step.with_std:
                return f"{name}: StandardScaler needs with_mean == with_std"
            n = len(columns)
            block["mean"] = [float(m) for m in step.mean_] if step.with_mean else [0.0] * n
            block["scale"] = [float(s) for s in step.scale_] if step.with_std else [1.0] * n
        else:
            return f"{name}: unsupported step {type(step).__name__} here"
    return block


def _encoded_block(name: str, columns: list[str], steps: list[Any]) -> dict[str, Any] | str:
    """A block of categories: SimpleImputer(NaN) [SimpleImputer(None)] then a OneHotEncoder
    or OrdinalEncoder. The NaN imputer is required: without it sklearn's encoders give NaN a
    meaning of their own (``encoded_missing_value``) that is not copied here."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    *imputers, encoder = steps
    fills: dict[str, list[Any]] = {}
    for step in imputers:
        fill = _imputer_fill(step, "category") if isinstance(step, SimpleImputer) else None
        if fill is None:
            return f"{name}: unsupported step {type(step).__name__} before the encoder"
        if isinstance(fill, str):
            return f"{name}: {fill}"
        if fill[0] in fills or (fill[0] == "nan" and fills):
            return f"{name}: imputers in an order the fast path does not copy"
        fills[fill[0]] = fill[1]
    if "nan" not in fills:
        return f"{name}: no NaN imputer before the encoder"
    if np.dtype(encoder.dtype) != np.float64:
        return f"{name}: encoder dtype must be float64"
    if getattr(encoder, "_infrequent_enabled", False):
        return f"{name}: infrequent categories"
    categories = [list(c) for c in encoder.categories_]
    if any(not (isinstance(v, str) or v is None) for c in categories for v in c):
        return f"{name}: categories must be strings (or None)"
    block = {"columns": columns, "nan_fill": fills["nan"], "none_fill": fills.get("none")}
    block["categories"] = categories
    if isinstance(encoder, OneHotEncoder):
        if encoder.drop is not None or encoder.handle_unknown == "error":
            return f"{name}: OneHotEncoder with drop or handle_unknown='error'"
        return {**block, "kind": "onehot"}
    if isinstance(encoder, OrdinalEncoder):
        if encoder.handle_unknown != "use_encoded_value":
            return f"{name}: OrdinalEncoder without handle_unknown='use_encoded_value'"
        return {**block, "kind": "ordinal", "unknown": float(encoder.unknown_value)}
    return f"{name}: unsupported encoder {type(encoder).__name__}"


def _blocks_of(transformer: Any) -> list[dict[str, Any]] | str:
    """The fitted ColumnTransformer as a list of blocks, or why it is not supported."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    known_steps = (SimpleImputer, StandardScaler, OneHotEncoder, OrdinalEncoder)
    # A sparse output (many one-hot columns) holds the same values as the dense one built
    # here; check_exact is the guard.
    blocks = []
    for name, step, columns in transformer.transformers_:
        if name == "remainder":
            if step != "drop" and len(columns):
                return "ColumnTransformer remainder is not 'drop'"
            continue
        if step == "drop" or len(columns) == 0:
            continue
        if isinstance(columns, str) or any(not isinstance(c, str) for c in columns):
            return f"{name}: columns must be a list of names"
        steps = list(step.named_steps.values()) if isinstance(step, Pipeline) else [step]
        unknown = [type(s).__name__ for s in steps if not isinstance(s, known_steps)]
        if unknown:
            return f"{name}: unsupported step(s) {', '.join(unknown)}"
        if isinstance(steps[-1], OneHotEncoder | OrdinalEncoder):
            block = _encoded_block(name, list(columns), steps)
        else:
            block = _numeric_block(name, list(columns), steps)
        if isinstance(block, str):
            return block
        blocks.append(block)
    return blocks


def build(pipeline: Any, task: str, bulk_rows: int = BULK_ROWS) -> FastModel | str:
    """The fast path of a fitted ``Pipeline(ColumnTransformer, random forest)``, or the
    reason it has none (a sentence)."""
    import treelite
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) != 2 or not isinstance(steps[0][1], ColumnTransformer):
        return "not a Pipeline(ColumnTransformer, forest)"
    transformer, forest = steps[0][1], steps[1][1]
    wanted = RandomForestClassifier if task == "classification" else RandomForestRegressor
    if type(forest) is not wanted:
        return f"unsupported estimator {type(forest).__name__} for {task}"
    if getattr(forest, "n_outputs_", 1) != 1:
        return "a multi-output forest"
    blocks = _blocks_of(transformer)
    if isinstance(blocks, str):
        return blocks
    spec = {
        "version": VERSION,
        "task": task,
        "columns": [str(c) for c in transformer.feature_names_in_],
        "blocks": blocks,
        "bulk_rows": int(bulk_rows),
        "n_nodes": int(sum(t.tree_.node_count for t in forest.estimators_)),
    }
    if task == "classification":
        spec["classes"] = [c.item() if hasattr(c, "item") else c for c in forest.classes_]
    return FastModel(spec, treelite.sklearn.import_model(forest), bulk_forest=forest)


# --- the fast model --------------------------------------------------------------------------


class FastModel:
    """Preprocessing blocks and a treelite forest (see the module docstring).

    Args:
        spec: What :func:`build` read from the sklearn model (plain values).
        forest: The treelite model (GTIL predicts with it).
        bulk_forest: sklearn's fitted forest, for batches of more than ``bulk_rows`` rows;
            without one, GTIL answers every size.
    """

    def __init__(self, spec: dict[str, Any], forest: Any, bulk_forest: Any = None):
        self.spec, self.forest, self.bulk_forest = spec, forest, bulk_forest
        self.task: str = spec["task"]
        self.columns: list[str] = spec["columns"]
        self.bulk_rows: int = int(spec.get("bulk_rows", BULK_ROWS))
        classes = spec.get("classes")
        # Object, not numpy's fixed-width text: sklearn's classes_ for string labels.
        self.classes = None if classes is None else np.array(classes, dtype=object)
        self._tables = [_lookup_tables(b) for b in spec["blocks"]]

    @property
    def engine(self) -> str:
        """What answers which batch size, for ``/metadata``."""
        if self.bulk_forest is None:
            return ENGINE_FAST
        return f"{ENGINE_FAST} up to {self.bulk_rows} rows, {ENGINE_BULK} above"

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
        for block, tables in zip(self.spec["blocks"], self._tables, strict=True):
            if block["kind"] == "numeric":
                part = _numeric_matrix(block, frame)
            else:
                part = _encoded_matrix(block, tables, frame)
            if part is None:
                return None
            parts.append(part)
        return np.hstack(parts) if len(parts) > 1 else parts[0]

    # the forest ------------------------------------------------------------------------------

    def forest_output(self, X: np.ndarray) -> np.ndarray:
        """The forest's raw output for the preprocessed ``X``: (n,) values or (n, k) class
        probabilities, computed as sklearn computes them."""
        if len(X) > self.bulk_rows and self.bulk_forest is not None:
            # sklearn's forest rounds X to float32 itself.
            if self.task == "classification":
                return self.bulk_forest.predict_proba(X)
            return self.bulk_forest.predict(X)
        return self.gtil_output(X)

    def gtil_output(self, X: np.ndarray) -> np.ndarray:
        """GTIL's output for ``X``, whatever its size."""
        import treelite

        # What sklearn's trees compare with their float64 thresholds: float32 values.
        with np.errstate(over="ignore"):
            X32 = np.ascontiguousarray(X, dtype=np.float32)
        if np.isinf(X32).any():
            # sklearn's forest refuses these (its input check); answer as it does, not with a
            # prediction sklearn would never give.
            raise ValueError("Input X contains infinity or a value too large for dtype('float32').")
        X = X32.astype(np.float64)
        out = treelite.gtil.predict(self.forest, X, nthread=1)  # (n, 1, 1) or (n, 1, k)
        return out[:, 0, :] if self.task == "classification" else out[:, 0, 0]

    def _finish(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(predictions, probabilities or None) from the forest's raw output."""
        if self.task != "classification":
            return raw, None
        # RandomForestClassifier.predict: the class of the first highest probability.
        return self.classes.take(np.argmax(raw, axis=1), axis=0), raw

    def outputs(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(predictions, class probabilities or None) for a frame fitted to the contract, or
        None when sklearn must answer this call."""
        X = self.transform(frame)
        return None if X is None else self._finish(self.forest_output(X))

    def outputs_of_records(
        self, records: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """:meth:`outputs` for records (dicts), without pandas: the single-record path."""
        rows = [self.row(r) for r in records]
        if not rows or any(r is None for r in rows):
            return None
        return self._finish(self.forest_output(np.array(rows, dtype=np.float64)))

    # saving -----------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> list[Path]:
        """Write the fast path's files (:data:`FILES`) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        spec, arrays = _split_arrays(self.spec)
        (folder / FILES[0]).write_text(json.dumps(spec, indent=1))
        np.savez(folder / FILES[1], **arrays)
        self.forest.serialize(str(folder / FILES[2]))
        return [folder / name for name in FILES]


def load(folder: str | Path, bulk_forest: Any = None) -> FastModel:
    """The fast path saved in ``folder`` (by the importer, in the BentoML model folder).

    Raises:
        ValueError: Files missing, or saved by another version of this module.
    """
    import treelite

    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"fast path files missing in {folder}: {', '.join(missing)}")
    spec = json.loads((folder / FILES[0]).read_text())
    if spec.get("version") != VERSION:
        raise ValueError(f"fast path version {spec.get('version')} is not {VERSION}")
    with np.load(folder / FILES[1], allow_pickle=False) as arrays:
        spec = _join_arrays(spec, arrays)
    forest = treelite.Model.deserialize(str(folder / FILES[2]))
    return FastModel(spec, forest, bulk_forest=bulk_forest)


def _split_arrays(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
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


def _join_arrays(spec: dict[str, Any], arrays: Any) -> dict[str, Any]:
    blocks = []
    for block in spec["blocks"]:
        block = dict(block)
        for key, value in list(block.items()):
            if isinstance(value, str) and value.startswith("npz:"):
                block[key] = [float(x) for x in arrays[value[4:]]]
        blocks.append(block)
    return {**spec, "blocks": blocks}


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
        if v is None or _is_nan(v):
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
    if _is_nan(value):
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
    # One column at a time: frame[list_of_columns] alone costs about 0.1 ms.
    columns = [frame[c].to_numpy() for c in block["columns"]]
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
    block: dict[str, Any], tables: list[dict[Any, int]], frame: pd.DataFrame
) -> np.ndarray | None:
    onehot = block["kind"] == "onehot"
    widths = [len(c) for c in block["categories"]]
    X = np.zeros((len(frame), sum(widths) if onehot else len(widths)))
    offset = 0
    for j, column in enumerate(block["columns"]):
        values = frame[column]
        if values.dtype != object:
            return None  # pandas' string or category dtypes: not what sklearn saw in training
        seen = [_category(block, j, v) for v in values.to_numpy()]
        if any(v is _DELEGATE for v in seen):
            return None
        codes = np.fromiter((tables[j].get(v, -1) for v in seen), np.int64, len(seen))
        if onehot:
            known = np.flatnonzero(codes >= 0)
            X[known, offset + codes[known]] = 1.0
            offset += widths[j]
        else:
            X[:, j] = np.where(codes >= 0, codes, block["unknown"])
    return X


# --- exactness and calibration ---------------------------------------------------------------


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


def sklearn_outputs(pipeline: Any, frame: pd.DataFrame, task: str):
    """(predictions, probabilities or None) of the sklearn model: the reference."""
    import warnings

    with warnings.catch_warnings():
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


def edge_rows(frame: pd.DataFrame, seed: int = 0, share: float = 0.2) -> pd.DataFrame:
    """A copy of ``frame`` with about ``share`` of its cells replaced by what the imputers and
    encoders must handle: missing numbers (NaN), missing strings (NaN and None) and unknown
    categories. Seeded, so an import checks the same rows every time."""
    rng = np.random.default_rng(seed)
    out = frame.reset_index(drop=True).copy()
    for column in out.columns:
        hit = rng.random(len(out)) < share
        if out[column].dtype == object:
            kind = rng.integers(0, 3, len(out))
            values = out[column].to_numpy(dtype=object).copy()
            values[hit & (kind == 0)] = np.nan
            values[hit & (kind == 1)] = None
            values[hit & (kind == 2)] = "never-seen-category"
            out[column] = pd.Series(values, dtype=object)
        elif out[column].dtype.kind in "iuf":
            out[column] = out[column].astype(np.float64).where(~hit, np.nan)
    return out


def check_exact(fast: FastModel, pipeline: Any, frames: Sequence[pd.DataFrame]) -> dict[str, Any]:
    """Compare ``fast`` with sklearn on every frame, through both forest engines (GTIL and
    the bulk one) and the record entry: predictions, and probabilities for a classifier,
    must be equal bit for bit. Returns ``{engine, rows_checked, exact}``; a frame the fast
    path delegates to sklearn (None) counts as not exact: it would not be the fast path."""
    checked, delegated, exact, saved = 0, 0, True, fast.bulk_rows
    try:
        for frame in frames:
            want = sklearn_outputs(pipeline, frame, fast.task)
            engines = [len(frame), 0] if fast.bulk_forest is not None else [len(frame)]
            for fast.bulk_rows in engines:
                exact &= _matches(fast.outputs(frame), want)
            fast.bulk_rows = len(frame)
            as_served = service_frame(frame)
            records = as_served.to_dict("records")
            got = fast.outputs_of_records(records)
            exact &= _matches(got, sklearn_outputs(pipeline, as_served, fast.task))
            delegated += len(frame) if got is None or fast.transform(frame) is None else 0
            checked += len(frame)
    finally:
        fast.bulk_rows = saved
    report = {"engine": fast.engine, "rows_checked": checked, "exact": bool(exact)}
    return {**report, "delegated_rows": delegated} if delegated else report


def _matches(got: tuple[Any, Any] | None, want: tuple[Any, Any]) -> bool:
    """Whether the fast path's (predictions, probabilities) are sklearn's; a delegated call
    (None) is no proof of the fast path, so it counts as a difference."""
    if got is None:
        return False
    if want[1] is None:
        return got[1] is None and same_bits(got[0], want[0])
    return same_bits(got[0], want[0]) and got[1] is not None and same_bits(got[1], want[1])


def calibrate(fast: FastModel, frame: pd.DataFrame, sizes: Sequence[int] = CALIBRATION_SIZES):
    """Set ``fast.bulk_rows`` to the largest of ``sizes`` at which GTIL still beats sklearn's
    forest on this machine (median of 5 timings each), and return it."""
    if fast.bulk_forest is None:
        return fast.bulk_rows
    X = fast.transform(frame.sample(max(sizes), replace=True, random_state=0))
    if X is None:
        return fast.bulk_rows
    best = 0
    for n in sizes:
        gtil = _median_seconds(lambda n=n: fast.gtil_output(X[:n]))
        if fast.task == "classification":
            bulk = _median_seconds(lambda n=n: fast.bulk_forest.predict_proba(X[:n]))
        else:
            bulk = _median_seconds(lambda n=n: fast.bulk_forest.predict(X[:n]))
        if gtil < bulk:
            best = n
    fast.bulk_rows = fast.spec["bulk_rows"] = best
    return best


def _median_seconds(call: Any, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return sorted(times)[runs // 2]


def prepare(
    pipeline: Any, task: str, frames: Sequence[pd.DataFrame], calibrate_on: pd.DataFrame | None
) -> tuple[FastModel | None, dict[str, Any]]:
    """Build, (calibrate,) check: ``(fast, report)`` when bit-exact on every frame, else
    ``(None, report)``: sklearn serves. The report is what the model's metadata records:
    ``engine``, ``rows_checked``, ``exact``, ``bulk_rows`` and, when not used, ``reason``."""
    fast = build(pipeline, task)
    if isinstance(fast, str):
        return None, {"engine": ENGINE_SKLEARN, "rows_checked": 0, "exact": False, "reason": fast}
    if calibrate_on is not None and len(calibrate_on):
        calibrate(fast, calibrate_on)
    report = {**check_exact(fast, pipeline, frames), "bulk_rows": fast.bulk_rows}
    if report.get("delegated_rows"):
        reason = "the fast path cannot take these inputs as sklearn does (e.g. float32 columns)"
        return None, {**report, "engine": ENGINE_SKLEARN, "exact": False, "reason": reason}
    if not report["exact"]:
        reason = "the fast path's predictions differ from scikit-learn's"
        return None, {**report, "engine": ENGINE_SKLEARN, "reason": reason}
    return fast, report
