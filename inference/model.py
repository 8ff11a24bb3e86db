"""A loaded model and its contract: what the service, the clients, Spark, the importer and the
pipeline's evaluation all predict with."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inference.contract import Contract, plain, read_contract
from inference.loading import load_pipeline


@dataclass
class LoadedModel:
    """The native scikit-learn Pipeline of an exported model, with its contract.

    ``predict``/``answers`` take frames already fitted to the contract
    (``inference.contract.validate`` or ``coerce``).
    """

    contract: Contract
    pipeline: Any
    path: Path

    @property
    def task(self) -> str:
        return self.contract.task

    @property
    def classes(self) -> list[Any] | None:
        classes = getattr(self.pipeline, "classes_", None)
        return [plain(c) for c in classes] if classes is not None else None

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # feature-name chatter
            return np.asarray(self.pipeline.predict(X)).ravel()

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray | None:
        """Class probabilities (columns in ``classes`` order), or None for a regressor."""
        if self.task != "classification" or not hasattr(self.pipeline, "predict_proba"):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return np.asarray(self.pipeline.predict_proba(X))

    def answers(self, X: pd.DataFrame) -> list[dict[str, Any]]:
        """One JSON-able answer per row: ``{"prediction": ...}``, plus ``"probabilities"``
        ({class as text: probability}) for a classifier."""
        predicted = [plain(p) for p in self.predict(X)]
        proba = self.predict_proba(X)
        if proba is None:
            return [{"prediction": p} for p in predicted]
        names = [str(c) for c in self.classes or []]
        return [
            {"prediction": p, "probabilities": dict(zip(names, map(float, row), strict=True))}
            for p, row in zip(predicted, proba, strict=True)
        ]


def load_model(folder: str | Path, contract: Contract | None = None) -> LoadedModel:
    """The exported MLflow model at ``folder``, loaded by the trust rules of
    ``inference.loading`` (raises ``ModelRefused``)."""
    folder = Path(folder)
    contract = contract or read_contract(folder)
    return LoadedModel(contract=contract, pipeline=load_pipeline(folder), path=folder)
