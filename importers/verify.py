"""Verification of an MLflow model folder before it may enter the BentoML model store.

Two levels: :func:`inspect_model` reads the files only (MLmodel, flavors, signature,
serialization, requirements) and is cheap; :func:`verify_model` also loads the model with the
same loader every path uses and checks it predicts its input example as recorded at export.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from importers.errors import ModelRejected
from inference import loading
from inference.constants import INPUT_EXAMPLE
from inference.contract import Contract, contract_from_signature, read_mlmodel, signature_of
from inference.errors import ModelRefused, one_line

REQUIRED_FLAVORS = ("python_function", "sklearn")
# Predictions of the same model on the same rows may differ in the last bits across BLAS builds.
RTOL, ATOL = 1e-6, 1e-9


@dataclass(frozen=True)
class ModelFacts:
    """What the MLmodel file and its neighbours say about a model (no model loaded).

    Attributes:
        signature: ``{"inputs": [...], "outputs": [...]}`` (plus ``params`` when set).
        input_columns: The signature's input column names.
        mlflow_metadata: The MLmodel ``metadata:`` block (task, classes, example predictions...).
        requirements: The pinned lines of ``requirements.txt``.
        model_file: The serialized model (``model.skops``).
        mlflow_version: The MLflow version that saved the model.
        contract: The signature as typed columns (``inference.contract``).
    """

    signature: dict[str, Any]
    input_columns: list[str]
    mlflow_metadata: dict[str, Any]
    requirements: list[str]
    model_file: Path
    mlflow_version: str | None
    contract: Contract


@dataclass(frozen=True)
class VerifiedModel:
    """A model that loaded and predicted its input example as expected."""

    facts: ModelFacts
    task: str
    classes: list[Any] | None
    feature_columns: list[str]
    target: str | None
    example_rows: int
    matched_expected: bool
    # The loaded sklearn model and its input example (signature columns), for the fast
    # path's import-time check (importers.fast).
    pipeline: Any = None
    example: Any = None


def inspect_model(path: Path) -> ModelFacts:
    """Check the files of the MLflow model at ``path`` without loading the model, by the
    trust rules of ``inference.loading`` (skops, no code, the model file inside the folder).

    Raises:
        ModelRejected: Not an MLflow model, a flavor missing, no signature, pickled, code
            shipped with it, no requirements.txt, or the model file missing.
    """
    mlmodel = _load_mlmodel(path)
    flavors = mlmodel.get("flavors") if isinstance(mlmodel.get("flavors"), dict) else {}
    missing = [f for f in REQUIRED_FLAVORS if f not in flavors]
    if missing:
        raise ModelRejected(
            f"not a scikit-learn MLflow model: MLmodel lacks the {' and '.join(missing)} "
            f"flavor (it has: {', '.join(flavors) or 'none'})"
        )
    try:
        signature = signature_of(mlmodel)
        if not signature.get("inputs"):
            raise ModelRejected(
                "the model has no signature (MLmodel `signature:` is missing): re-export it "
                "with one, as pipeline.train.export_model does"
            )
        metadata = dict(mlmodel.get("metadata") or {})
        contract = contract_from_signature(signature["inputs"], metadata)
        model_file = loading.model_file(path, mlmodel)
    except ModelRefused as exc:
        raise ModelRejected(str(exc)) from None
    return ModelFacts(
        signature=signature,
        input_columns=[c["name"] for c in signature["inputs"]],
        mlflow_metadata=metadata,
        requirements=read_requirements(path),
        model_file=model_file,
        mlflow_version=mlmodel.get("mlflow_version"),
        contract=contract,
    )


def verify_model(path: Path) -> VerifiedModel:
    """Inspect, load and test-predict the MLflow model at ``path``.

    The model is loaded with ``inference.loading.load_pipeline`` (the loader every path uses) and
    must predict its input example; when MLmodel records ``example_predictions`` (the
    pipeline's export does), the predictions must match them.

    Raises:
        ModelRejected: Any check failed; the message names the problem.
    """
    facts = inspect_model(path)
    model = _load(path, facts)
    example = _input_example(path, facts.contract)
    missing = [c for c in facts.input_columns if c not in example.columns]
    if missing:
        raise ModelRejected(f"the input example lacks signature column(s): {', '.join(missing)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predictions = np.asarray(model.predict(example[facts.input_columns]))
    except Exception as exc:  # any failure to predict disqualifies the model
        raise ModelRejected(
            f"the model fails to predict its input example: {one_line(exc, limit=300)}"
        ) from exc
    if len(predictions) != len(example):
        raise ModelRejected(
            f"the model returned {len(predictions)} predictions for {len(example)} example rows"
        )
    expected = facts.mlflow_metadata.get("example_predictions")
    if expected is not None:
        _check_expected(predictions, expected)
    info = facts.mlflow_metadata
    task = info.get("task") or (
        "classification" if hasattr(model, "predict_proba") else "regression"
    )
    classes = info.get("classes")
    if classes is None and task == "classification" and hasattr(model, "classes_"):
        classes = np.asarray(model.classes_).tolist()
    return VerifiedModel(
        facts=facts,
        task=task,
        classes=list(classes) if classes is not None else None,
        feature_columns=list(info.get("feature_columns") or facts.input_columns),
        target=info.get("target"),
        example_rows=len(example),
        matched_expected=expected is not None,
        pipeline=model,
        example=example[facts.input_columns],
    )


def read_requirements(path: Path) -> list[str]:
    """The requirement lines of the model's ``requirements.txt`` (no comments or blanks).

    Raises:
        ModelRejected: There is none: the bento could not install what the model needs.
    """
    file = path / "requirements.txt"
    if not file.is_file():
        raise ModelRejected(
            "the model has no requirements.txt: the bento could not pin the packages it needs"
        )
    lines = (line.split("#", 1)[0].strip() for line in file.read_text().splitlines())
    return [line for line in lines if line]


def _load_mlmodel(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise ModelRejected(f"not an MLflow model: {path} is not a folder")
    if not (path / "MLmodel").is_file():
        raise ModelRejected(f"not an MLflow model: no MLmodel file in {path}")
    try:
        return read_mlmodel(path)
    except ModelRefused as exc:  # YAML errors, not a mapping: a broken MLmodel
        raise ModelRejected(f"corrupt MLmodel file in {path}: {exc}") from None


def _load(path: Path, facts: ModelFacts) -> Any:
    try:
        return loading.load_pipeline(path)
    except ModelRefused as exc:  # outside the allow-list, or skops cannot read it
        raise ModelRejected(str(exc)) from None


def _input_example(path: Path, contract: Contract) -> Any:
    """The model's input example, fitted to its contract as every path reads it (MLflow's own
    reader casts a ``long`` column holding a missing value to int64, and fails)."""
    from inference.model import input_example

    info = read_mlmodel(path).get("saved_input_example_info")
    declared = info.get("artifact_path") if isinstance(info, dict) else None
    if declared != INPUT_EXAMPLE or not (path / INPUT_EXAMPLE).is_file():
        raise ModelRejected("the model has no input example to verify its predictions on")
    try:
        return input_example(path, contract)
    except Exception as exc:  # unreadable JSON, not a table, values that do not fit
        raise ModelRejected(
            f"cannot read the model's input example: {one_line(exc, limit=300)}"
        ) from exc


def _check_expected(predictions: np.ndarray, expected: list[Any]) -> None:
    wanted = np.asarray(expected)
    same_shape = wanted.shape == predictions.shape
    numeric = same_shape and all(
        np.issubdtype(a.dtype, np.number) and not np.issubdtype(a.dtype, np.bool_)
        for a in (predictions, wanted)
    )
    if numeric:
        matches = bool(np.allclose(predictions, wanted, rtol=RTOL, atol=ATOL))
    else:
        matches = same_shape and predictions.tolist() == wanted.tolist()
    if not matches:
        raise ModelRejected(
            "the model's predictions of its input example do not match those recorded at "
            f"export: got {_short(predictions.tolist())}, expected {_short(wanted.tolist())}"
        )


def _short(values: list[Any], limit: int = 5) -> str:
    shown = ", ".join(f"{v:.6g}" if isinstance(v, float) else repr(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"
