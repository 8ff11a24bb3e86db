"""Build the exact fast path from a fitted scikit-learn model, and save it: what the importer
runs (``importers.fast`` checks it), never what a bento ships (``inference.fastpath`` and
``inference.forest`` run it).

:func:`build` reads a ``Pipeline(ColumnTransformer, RandomForestRegressor |
RandomForestClassifier)`` into plain values: the preprocessing blocks (fills, means, scales,
categories) and the forest's nodes as arrays (:func:`forest_arrays`), or returns the reason it
cannot (a sentence).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from inference.fastpath import (
    FILES,
    FOREST_PREFIX,
    VERSION,
    FastModel,
    is_nan,
    split_arrays,
)
from inference.forest import Forest, round_down_to_float32


def _imputer_fill(step: Any, kind: str) -> tuple[str, list[Any]] | str:
    """``("nan"|"none", fills)`` for a SimpleImputer, or why the fast path cannot copy it."""
    if step.add_indicator:
        return "SimpleImputer with add_indicator"
    if is_nan(step.missing_values):
        missing = "nan"
    elif step.missing_values is None and kind == "category":
        missing = "none"
    else:
        return f"SimpleImputer(missing_values={step.missing_values!r})"
    fills = list(step.statistics_)
    if kind == "number":
        if any(is_nan(float(f)) for f in fills):
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


def build(pipeline: Any, task: str) -> FastModel | str:
    """The fast path of a fitted ``Pipeline(ColumnTransformer, random forest)``, or the
    reason it has none (a sentence)."""
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
    arrays = forest_arrays(forest)
    spec = {
        "version": VERSION,
        "task": task,
        "columns": [str(c) for c in transformer.feature_names_in_],
        "blocks": blocks,
        "n_features": int(forest.n_features_in_),
        "n_trees": len(forest.estimators_),
        "n_nodes": len(arrays["nodes"]),
    }
    if task == "classification":
        spec["classes"] = [c.item() if hasattr(c, "item") else c for c in forest.classes_]
    try:
        return FastModel(spec, Forest(arrays, spec["n_features"]))
    except ValueError as exc:  # e.g. blocks that do not make the forest's columns
        return f"the fast path does not fit this model: {exc}"


def forest_arrays(forest: Any) -> dict[str, np.ndarray]:
    """A fitted RandomForestRegressor or RandomForestClassifier as ``inference.forest``'s
    arrays: its trees in order, each tree's nodes in breadth-first order (the top levels,
    which every row visits, share cache lines: faster in bulk than sklearn's depth-first
    order, docs/fast-path-research.md), leaves pointing to themselves,
    thresholds rounded down to float32."""
    classifier = hasattr(forest, "classes_")
    outputs = int(forest.n_classes_) if classifier else 1
    nodes, missing_left, values, roots, depths = [], [], [], [], []
    offset = 0
    for estimator in forest.estimators_:
        tree = estimator.tree_
        left, right = tree.children_left, tree.children_right
        order = _breadth_first(left, right)
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order)) + offset
        leaf = left[order] < 0
        own = position[order]
        part = np.zeros((len(order), 4), dtype=np.int32)
        part[:, 0] = np.where(leaf, 0, tree.feature[order])
        thresholds = round_down_to_float32(np.where(leaf, 0.0, tree.threshold[order]))
        part[:, 1] = thresholds.view(np.int32)
        part[:, 2] = np.where(leaf, own, position[np.where(leaf, 0, left[order])])
        part[:, 3] = np.where(leaf, own, position[np.where(leaf, 0, right[order])])
        nodes.append(part)
        missing_left.append(np.where(leaf, 0, tree.missing_go_to_left[order]).astype(np.uint8))
        # DecisionTreeClassifier.predict_proba returns tree_.value as it is (class fractions).
        values.append(np.asarray(tree.value[order, 0, :outputs], dtype=np.float64))
        roots.append(offset)
        depths.append(int(tree.max_depth))
        offset += len(order)
    return {
        "nodes": np.ascontiguousarray(np.concatenate(nodes)),
        "missing_left": np.concatenate(missing_left),
        "value": np.ascontiguousarray(np.concatenate(values)),
        "roots": np.asarray(roots, dtype=np.int64),
        "depths": np.asarray(depths, dtype=np.int32),
    }


def _breadth_first(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The node ids of one tree, level by level from the root."""
    order, level = [], np.array([0])
    while len(level):
        order.append(level)
        inner = level[left[level] >= 0]
        level = np.stack([left[inner], right[inner]], axis=1).ravel()
    return np.concatenate(order)


def save(fast: FastModel, folder: str | Path) -> list[Path]:
    """Write ``fast``'s files (``inference.fastpath.FILES``) into ``folder``: JSON and plain
    arrays (``inference.fastpath.load`` reads them with ``allow_pickle=False``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec, arrays = split_arrays(fast.spec)
    arrays.update({FOREST_PREFIX + name: a for name, a in fast.forest.arrays.items()})
    (folder / FILES[0]).write_text(json.dumps(spec, indent=1))
    np.savez(folder / FILES[1], **arrays)
    return [folder / name for name in FILES]
