"""The exact fast path at import time: build it (``importers.fast_build``), check it against
scikit-learn, bit for bit, and save it into the BentoML model only when it is exact. The
check's report goes into the model's metadata (``fast_path``) either way.

What the check compares, through every entry (frames, records, and the forest on several
threads as offline scoring runs it): predictions, and class probabilities for a classifier,

- on the model's test data, its input example and an edge-case copy of them (missing values,
  unknown categories, numbers at the scaler's pre-image of split thresholds, -0.0,
  subnormals, large values): the whole pipeline against sklearn's Pipeline;
- on rows built at the forest's input (:func:`forest_edge_rows`): values exactly on split
  thresholds and one float32 and one float64 step either side, NaN (routed as sklearn routes
  it), subnormals, -0.0, values near the float32 limit: the compiled forest against
  sklearn's forest.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from importers.fast_build import build, save
from importers.verify import VerifiedModel
from inference import fastpath
from inference.constants import FASTPATH_FOLDER
from inference.contract import coerce
from inference.errors import InputError, one_line

logger = logging.getLogger("tagserve.importers")
FOREST_EDGE_ROWS = 6000
# Numbers every forest must take as sklearn does: signed zeros, float32 and float64
# subnormals, and large values still finite in float32.
SPECIAL_VALUES = (0.0, -0.0, 5e-324, -5e-324, 1e-45, -1e-45, 1e-40, 1e37, -1e37, 3.4e38, -3.4e38)
# Before the scaler: large, but not so large that a small scale takes them past float32.
FRAME_SPECIAL_VALUES = (0.0, -0.0, 5e-324, -5e-324, 1e-45, -1e-45, 1e-40, 1e15, -1e15)


def read_test_data(path: Path | None, verified: VerifiedModel) -> pd.DataFrame | None:
    """The model's test data as model input (its signature columns, coerced to their types),
    or None when the source has none or it does not fit the signature."""
    if path is None:
        return None
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        return coerce(frame, verified.facts.contract)
    except (InputError, OSError, ValueError) as exc:
        logger.warning("test data %s not used for the fast path check: %s", path, exc)
        return None


# --- edge cases ------------------------------------------------------------------------------


def split_points(forest: Any) -> tuple[np.ndarray, np.ndarray]:
    """(feature, threshold) of every split node of a fitted sklearn forest."""
    features, thresholds = [], []
    for estimator in forest.estimators_:
        tree = estimator.tree_
        inner = tree.children_left >= 0
        features.append(tree.feature[inner])
        thresholds.append(tree.threshold[inner])
    return np.concatenate(features), np.concatenate(thresholds)


def near(values: np.ndarray) -> np.ndarray:
    """Each value, and one float64 and one float32 step either side of it (and of its float32
    rounding): where a comparison with a threshold can go either way."""
    v64 = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore"):
        v32 = v64.astype(np.float32)
    up32, down32 = np.float32(np.inf), np.float32(-np.inf)
    return np.stack(
        [
            v64,
            np.nextafter(v64, np.inf),
            np.nextafter(v64, -np.inf),
            v32.astype(np.float64),
            np.nextafter(v32, up32).astype(np.float64),
            np.nextafter(v32, down32).astype(np.float64),
        ],
        axis=1,
    )


def forest_edge_rows(forest: Any, base: np.ndarray, rows: int = FOREST_EDGE_ROWS, seed: int = 0):
    """Rows of the forest's input (copies of ``base`` rows, the preprocessed real data) with one
    cell set to a split threshold or a step beside it, plus rows with NaN cells and with the
    :data:`SPECIAL_VALUES`. Seeded."""
    rng = np.random.default_rng(seed)
    features, thresholds = split_points(forest)
    base = np.asarray(base, dtype=np.float64)
    if not len(base) or not len(features):
        return np.empty((0, forest.n_features_in_))
    picked = rng.integers(0, len(features), rows)
    values = near(thresholds[picked])[np.arange(rows), rng.integers(0, 6, rows)]
    at_splits = base[rng.integers(0, len(base), rows)].copy()
    at_splits[np.arange(rows), features[picked]] = values
    with_nan = base[rng.integers(0, len(base), rows // 2)].copy()
    with_nan[rng.random(with_nan.shape) < 0.2] = np.nan
    special = base[rng.integers(0, len(base), rows // 2)].copy()
    hit = rng.random(special.shape) < 0.2
    special[hit] = rng.choice(np.array(SPECIAL_VALUES), hit.sum())
    rows = np.vstack([at_splits, with_nan, special])
    # A split of "missing or not" has an infinite threshold: rows pushed past float32 by
    # near() are refused by sklearn and by the forest alike, not compared.
    with np.errstate(over="ignore"):
        return rows[~np.isinf(rows.astype(np.float32)).any(axis=1)]


def edge_rows(
    frame: pd.DataFrame,
    fast: fastpath.FastModel | None = None,
    forest: Any = None,
    seed: int = 0,
    share: float = 0.2,
) -> pd.DataFrame:
    """A copy of ``frame`` with about ``share`` of its cells replaced by what the imputers,
    encoders and the forest must handle: missing numbers (NaN), missing strings (NaN and
    None), unknown categories, and numbers that land on or beside a split threshold after
    the scaler (its pre-image ``t * scale + mean``, and one step either side), -0.0,
    subnormals and large values. Seeded, so an import checks the same rows every time."""
    rng = np.random.default_rng(seed)
    out = frame.reset_index(drop=True).copy()
    near_splits = {} if fast is None or forest is None else _split_preimages(fast, forest)
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
            values = out[column].to_numpy(dtype=np.float64).copy()
            kind = rng.integers(0, 3, len(out))
            values[hit & (kind == 0)] = np.nan
            special = hit & (kind == 1)
            values[special] = rng.choice(np.array(FRAME_SPECIAL_VALUES), special.sum())
            points = near_splits.get(column)
            at_split = hit & (kind == 2)
            if points is not None and len(points):
                values[at_split] = rng.choice(points, at_split.sum())
            out[column] = values
    return out


def _split_preimages(fast: fastpath.FastModel, forest: Any) -> dict[str, np.ndarray]:
    """Per scaled or plain numeric input column, the values that the scaler maps to (or next
    to) the forest's split thresholds on that column: ``t * scale + mean`` and its
    neighbours. (The scaler's rounding may move a pre-image off the threshold itself: the
    forest-level rows cover the threshold exactly.)"""
    features, thresholds = split_points(forest)
    out, offset = {}, 0
    for block in fast.spec["blocks"]:
        width = fastpath.block_width(block)
        if block["kind"] == "numeric":
            for j, column in enumerate(block["columns"]):
                t = thresholds[features == offset + j]
                if block["mean"] is not None:
                    t = t * block["scale"][j] + block["mean"][j]
                out[column] = near(t[np.isfinite(t)]).ravel()
        offset += width
    return out


# --- the check -------------------------------------------------------------------------------


def check_exact(
    fast: fastpath.FastModel,
    pipeline: Any,
    frames: Mapping[str, pd.DataFrame],
    forest_rows: np.ndarray | None = None,
) -> dict[str, Any]:
    """Compare ``fast`` with sklearn on every frame (frame entry, record entry, and the
    forest on 2 threads) and on ``forest_rows`` (the forest alone): bit for bit.

    Returns ``{engine, rows_checked, exact, checked_on}`` (+ ``delegated_rows``): a frame the
    fast path delegates to sklearn (None) counts as not exact: it would not be the fast
    path."""
    checked, delegated, exact = 0, 0, True
    checked_on = {}
    for name, frame in frames.items():
        want = fastpath.sklearn_predict_arrays(pipeline, frame, fast.task)
        exact &= fastpath.matches(fast.predict_arrays(frame), want)
        exact &= fastpath.matches(fast.predict_arrays(frame, threads=2), want)
        as_served = fastpath.service_frame(frame)
        got = fast.predict_arrays_of_records(as_served.to_dict("records"))
        exact &= fastpath.matches(
            got, fastpath.sklearn_predict_arrays(pipeline, as_served, fast.task)
        )
        delegated += len(frame) if got is None or fast.transform(frame) is None else 0
        checked += len(frame)
        checked_on[name] = len(frame)
    if forest_rows is not None and len(forest_rows):
        forest = pipeline.steps[-1][1]
        rows = _rows_sklearn_takes(forest, forest_rows)
        want = fastpath.sklearn_predict_arrays(forest, rows, fast.task)
        exact &= fastpath.matches(fast.finish(fast.forest_output(rows)), want)
        checked += len(rows)
        checked_on["forest_edge_rows"] = len(rows)
    report = {"engine": fast.engine, "rows_checked": checked, "exact": bool(exact)}
    report["checked_on"] = checked_on
    return {**report, "delegated_rows": delegated} if delegated else report


def _rows_sklearn_takes(forest: Any, rows: np.ndarray) -> np.ndarray:
    """``rows`` without those sklearn's forest refuses: NaN, if its trees take none."""
    with_nan = np.isnan(rows).any(axis=1)
    if not with_nan.any():
        return rows
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            forest.predict(rows[with_nan][:1])
        return rows
    except ValueError:
        return rows[~with_nan]


def prepare(
    pipeline: Any, task: str, frames: Mapping[str, pd.DataFrame], edge_cases: bool = True
) -> tuple[fastpath.FastModel | None, dict[str, Any]]:
    """Build and check: ``(fast, report)`` when bit-exact on every frame, on an edge-case copy
    of them (:func:`edge_rows`) and on the forest's edge rows (:func:`forest_edge_rows`),
    else ``(None, report)``: sklearn serves. The report is what the model's metadata
    records: ``engine``, ``exact``, ``rows_checked``, ``checked_on`` and, when not used,
    ``reason``."""
    fast = build(pipeline, task)
    if isinstance(fast, str):
        report = {"engine": fastpath.ENGINE_SKLEARN, "rows_checked": 0, "exact": False}
        return None, {**report, "checked_on": {}, "reason": fast}
    forest = pipeline.steps[-1][1]
    frames = dict(frames)
    if edge_cases and frames:
        real = pd.concat(list(frames.values()), ignore_index=True)
        frames["edge_cases"] = edge_rows(real, fast, forest)
    real = [fast.transform(f) for f in frames.values()]
    real = [X for X in real if X is not None and len(X)]
    base = np.vstack(real) if real else np.zeros((1, fast.forest.n_features))
    rows = forest_edge_rows(forest, base) if edge_cases else None
    report = check_exact(fast, pipeline, frames, rows)
    if report.get("delegated_rows"):
        reason = "the fast path cannot take these inputs as sklearn does (e.g. float32 columns)"
        return None, {**report, "engine": fastpath.ENGINE_SKLEARN, "exact": False, "reason": reason}
    if not report["exact"]:
        reason = "the fast path's predictions differ from scikit-learn's"
        return None, {**report, "engine": fastpath.ENGINE_SKLEARN, "reason": reason}
    return fast, report


def prepare_fast_path(
    verified: VerifiedModel, test: pd.DataFrame | None, scratch: Path
) -> tuple[Path | None, dict[str, Any]]:
    """Build and check the fast path of ``verified``; save it under ``scratch`` if exact.

    Returns:
        (the saved folder or None, the report): ``engine``, ``exact``, ``rows_checked``,
        ``checked_on`` (rows per frame) and, when not used, ``reason``.
    """
    example = coerce(verified.example, verified.facts.contract)
    frames = {"input_example": example}
    if test is not None and len(test):
        frames["test_data"] = test
    try:
        fast, report = prepare(verified.pipeline, verified.task, frames)
    except Exception as exc:  # an odd model the build or check trips on: it still imports
        fast, report = (
            None,
            {
                "engine": fastpath.ENGINE_SKLEARN,
                "exact": False,
                "rows_checked": 0,
                "checked_on": {},
                "reason": f"building the fast path failed: {one_line(exc)}",
            },
        )
    if fast is None:
        logger.warning("no fast path: %s; scikit-learn serves this model", report["reason"])
        return None, report
    # The answers a consumer that does not load sklearn re-checks the fast path against.
    fast.spec["expected"] = fastpath.recorded_predictions(verified.pipeline, example, verified.task)
    folder = scratch / FASTPATH_FOLDER
    save(fast, folder)
    return folder, report
