"""The exported MLflow model, found in a folder or in the BentoML model store, for offline use.

Scoring goes through the model's native sklearn Pipeline (``pipeline.train.load_model``) on
frames whose columns are cast to the model's MLflow signature, the same values the service
and ``mlflow.pyfunc`` hand to the same Pipeline, so the predictions are identical.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clients.errors import ClientError

MLFLOW_MODEL_FOLDER = "mlflow_model"  # where bentoml.mlflow.import_model keeps the files
# MLflow signature column types -> pandas dtypes used to read and cast input columns.
PANDAS_DTYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "object",
    "binary": "object",
    "datetime": "datetime64[ns]",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # an MLflow ColSpec type: double, long, string, ...
    required: bool = True


@dataclass
class ModelInfo:
    """What the MLmodel file says: input columns, task, classes, where the files are."""

    path: Path
    ref: str  # how the user named it: a BentoML tag or a folder
    columns: list[Column]
    task: str
    classes: list[Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def types(self) -> dict[str, str]:
        return {c.name: c.type for c in self.columns}


def read_model_info(path: Path, ref: str | None = None) -> ModelInfo:
    """Read the MLmodel file of the MLflow model folder ``path`` (no model is loaded)."""
    import yaml

    mlmodel = Path(path) / "MLmodel"
    if not mlmodel.is_file():
        raise ClientError(f"{path} is not an MLflow model folder (no MLmodel file)")
    try:
        spec = yaml.safe_load(mlmodel.read_text())
        inputs = json.loads((spec.get("signature") or {}).get("inputs") or "null")
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ClientError(f"cannot read {mlmodel}: {exc}") from exc
    if not inputs or any("name" not in c for c in inputs):
        raise ClientError(f"{mlmodel} has no column-based input signature")
    metadata = spec.get("metadata") or {}
    columns = [Column(c["name"], c.get("type", "string"), c.get("required", True)) for c in inputs]
    order = metadata.get("feature_columns")
    if order and sorted(order) == sorted(c.name for c in columns):
        by_name = {c.name: c for c in columns}
        columns = [by_name[name] for name in order]
    return ModelInfo(
        path=Path(path),
        ref=ref or str(path),
        columns=columns,
        task=metadata.get("task", "regression"),
        classes=metadata.get("classes"),
        metadata=metadata,
    )


def bento_model_path(tag: str) -> Path:
    """The MLflow model folder of a BentoML model (as imported by ``importers``)."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    try:
        model = bentoml.models.get(tag)
    except NotFound as exc:
        raise ClientError(f"no model {tag!r} in the BentoML model store: {exc}") from exc
    except (BentoMLException, ValueError) as exc:
        raise ClientError(f"bad BentoML model tag {tag!r}: {exc}") from exc
    path = Path(model.path_of(MLFLOW_MODEL_FOLDER))
    if not (path / "MLmodel").is_file():
        raise ClientError(f"BentoML model {model.tag} holds no MLflow model ({path})")
    return path


def resolve(model: str | None = None, model_dir: str | Path | None = None) -> ModelInfo:
    """A model named by a BentoML tag (``model``) or an MLflow model folder (``model_dir``)."""
    if (model is None) == (model_dir is None):
        raise ClientError("give exactly one of --model TAG and --model-dir DIR")
    if model_dir is not None:
        path = Path(model_dir)
        if not path.is_dir():
            raise ClientError(f"model folder {path} does not exist")
        return read_model_info(path, str(path))
    path = bento_model_path(model)
    info = read_model_info(path, model)
    info.ref = f"bentoml:{Path(path).parent.parent.name}:{Path(path).parent.name}"
    return info


def conform(frame: pd.DataFrame, info: ModelInfo) -> pd.DataFrame:
    """The model's input columns of ``frame``, in signature order, cast to signature types.

    A missing optional column is added as all-missing; a missing required one is an error.
    Values that do not fit their column type (text in a number column) are an error too.
    """
    missing = [c.name for c in info.columns if c.required and c.name not in frame.columns]
    if missing:
        raise ClientError(f"input lacks model column(s): {', '.join(missing)}")
    out = {}
    for col in info.columns:
        if col.name not in frame.columns:
            out[col.name] = pd.Series(
                np.nan if col.type in ("double", "float") else None,
                index=frame.index,
                dtype=_dtype(col.type, True),
            )
            continue
        values = frame[col.name]
        out[col.name] = _cast(values, col)
    return pd.DataFrame(out, index=frame.index)


def _dtype(mlflow_type: str, has_missing: bool) -> str:
    dtype = PANDAS_DTYPES.get(mlflow_type, "object")
    if has_missing and dtype in ("int64", "int32", "bool"):
        return "float64"  # what pandas (and MLflow) use for integers with missing values
    return dtype


def _cast(values: pd.Series, col: Column) -> pd.Series:
    if col.type in ("string", "binary"):
        if values.dtype == object:
            return values
        # Numbers or categories read where text is expected: text, missing stays missing.
        return (
            values.astype(object)
            .where(values.notna(), None)
            .map(lambda v: v if v is None or isinstance(v, str) else str(v))
        )
    dtype = _dtype(col.type, bool(values.isna().any()))
    if values.dtype == dtype:
        return values
    try:
        if dtype.startswith(("float", "int")):
            return pd.to_numeric(values, errors="raise").astype(dtype)
        return values.astype(dtype)
    except (TypeError, ValueError) as exc:
        bad = _first_bad(values)
        raise ClientError(f"column {col.name!r} must hold {col.type} values, got {bad!r}") from exc


def _first_bad(values: pd.Series) -> Any:
    for v in values:
        try:
            float(v)
        except (TypeError, ValueError):
            return v
    return values.iloc[0] if len(values) else None


class LoadedModel:
    """The native sklearn Pipeline plus its signature: ``predict(frame) -> ndarray``.

    The forest predicts with ``n_jobs=1``, as in the service: with more threads, trees are
    summed in the order the threads finish, which changes the last bits of a regression
    (about 1e-12 relative) from run to run.
    """

    def __init__(self, info: ModelInfo, n_jobs: int | None = 1):
        self.info = info
        self.n_jobs = n_jobs
        self.load_seconds = 0.0

    @cached_property
    def pipeline(self):
        began = time.perf_counter()
        from pipeline.train import load_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                model = load_model(self.info.path)
            except Exception as exc:  # MLflow and skops raise many types, all readable
                raise ClientError(f"cannot load the model at {self.info.path}: {exc}") from exc
        if self.n_jobs is not None and "model__n_jobs" in model.get_params():
            model.set_params(model__n_jobs=self.n_jobs)
        self.load_seconds = time.perf_counter() - began
        return model

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predictions for the rows of ``frame`` (which may hold extra columns)."""
        X = conform(frame, self.info)
        if not len(X):
            return np.array([], dtype=object if self.info.task == "classification" else float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                return self.pipeline.predict(X)
            except ValueError as exc:
                raise ClientError(f"the model rejected the input: {exc}") from exc
