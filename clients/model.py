"""The exported MLflow model, found in a folder or in the BentoML model store, for offline use.

Its contract and loader are the core's (``inference``): scoring coerces file rows to the
signature's types and predicts as the service does: on the exact fast path the importer saved
in the BentoML model (``--model TAG``), else with the same single-threaded sklearn Pipeline,
so the predictions are identical. A plain folder (``--model-dir``) has no checked fast path.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clients.errors import ClientError
from inference.bento import fastpath_folder, find_in_store, get_model, mlflow_folder
from inference.contract import Column, Contract, coerce, read_contract
from inference.domain import BOUNDS_METADATA, DOMAIN_METADATA, model_domain, policy_from_env
from inference.errors import InputError, TagserveError
from inference.loading import check_model
from inference.model import LoadedModel, load_model


@dataclass
class ModelInfo:
    """A model's contract, where its files are, and how the user named it."""

    path: Path
    ref: str  # a BentoML tag or a folder
    contract: Contract
    fast_path: Path | None = None  # the fast path the importer proved exact (BentoML models)
    # A plain MLflow folder has no recorded domain: it is read from the Pipeline once loaded.
    domain_from_pipeline: bool = False

    @property
    def columns(self) -> list[Column]:
        return self.contract.columns

    @property
    def features(self) -> list[str]:
        return self.contract.features

    @property
    def task(self) -> str:
        return self.contract.task

    @property
    def classes(self) -> list[Any] | None:
        return self.contract.classes

    @property
    def dtypes(self) -> dict[str, str]:
        return self.contract.dtypes


def read_model_info(
    path: Path, ref: str | None = None, domain: dict[str, Any] | None = None
) -> ModelInfo:
    """The contract of the MLflow model folder ``path`` (no model is loaded), with the model's
    ``domain`` enforced as TAGSERVE_UNKNOWN_CATEGORIES and TAGSERVE_OUT_OF_RANGE say (the
    service's settings, read by the clients too)."""
    try:
        contract = read_contract(Path(path), domain).enforcing(policy_from_env())
    except TagserveError as exc:
        raise ClientError(str(exc)) from None
    except ValueError as exc:  # a setting that is neither accept nor refuse
        raise ClientError(str(exc)) from None
    return ModelInfo(path=Path(path), ref=ref or str(path), contract=contract)


def resolve(model: str | None = None, model_dir: str | Path | None = None) -> ModelInfo:
    """A model named by a BentoML tag (``model``) or an MLflow model folder (``model_dir``)."""
    if (model is None) == (model_dir is None):
        raise ClientError("give exactly one of --model TAG and --model-dir DIR")
    if model_dir is not None:
        path = Path(model_dir)
        if not path.is_dir():
            raise ClientError(f"model folder {path} does not exist")
        # Refuse a hostile folder here, before Spark ships it to executors that would only
        # fail there (the loader checks again wherever the model is loaded).
        check_model(path)
        info = read_model_info(path, str(path))
        info.domain_from_pipeline = True
        return info
    try:
        # The store's files when the tag names a model plainly (no BentoML import: start-up).
        bento_model = find_in_store(model) or get_model(model)
        path = mlflow_folder(bento_model)
    except TagserveError as exc:
        raise ClientError(str(exc)) from None
    domain = bento_model.info.metadata.get(DOMAIN_METADATA)
    info = read_model_info(path, model, domain if isinstance(domain, dict) else None)
    info.ref = f"bentoml:{path.parent.parent.name}:{path.parent.name}"
    info.fast_path = fastpath_folder(bento_model)
    return info


def coerced(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """``inference.contract.coerce``, its errors as the clients' own."""
    try:
        return coerce(frame, contract)
    except InputError as exc:
        raise ClientError(str(exc)) from None


def domain_contract(info: ModelInfo, pipeline: Any) -> Contract:
    """The contract of a plain MLflow folder with its domain, read from its fitted Pipeline
    and its MLmodel's ``bounds`` (``inference.domain.model_domain``, as the importer does)."""
    from inference.contract import read_mlmodel

    bounds = (read_mlmodel(info.path).get("metadata") or {}).get(BOUNDS_METADATA)
    types = {c.name: c.type for c in info.columns}
    domain = model_domain(pipeline, types, bounds if isinstance(bounds, dict) else None)
    return read_model_info(info.path, info.ref, domain).contract


class OfflineModel:
    """The model of ``info``, loaded on first use: ``predict(frame) -> ndarray``, from any
    number of threads (``threads``: of the forest within one call)."""

    def __init__(self, info: ModelInfo, threads: int = 1):
        self.info = info
        self.threads = threads
        self.load_seconds = 0.0
        self._model: LoadedModel | None = None
        self._loading = threading.Lock()

    @property
    def loaded(self) -> LoadedModel:
        with self._loading:  # one load, whichever thread asks first
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> LoadedModel:
        began = time.perf_counter()
        try:
            model = load_model(self.info.path, self.info.contract, self.info.fast_path, lazy=True)
        except TagserveError as exc:
            raise ClientError(f"cannot load the model at {self.info.path}: {exc}") from None
        model.threads = self.threads
        if self.info.domain_from_pipeline:  # as the importer would record it
            self.info.contract = domain_contract(self.info, model.pipeline)
            self.info.domain_from_pipeline = False
        self.load_seconds = time.perf_counter() - began
        return model

    def inputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's columns of ``frame`` (which may hold extra ones), fitted to its
        contract (types, and its domain where enforced)."""
        if self.info.domain_from_pipeline:
            _ = self.loaded  # the domain comes with the model
        return coerced(frame, self.info.contract)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predictions for the rows of ``frame`` (which may hold extra columns)."""
        return self.predict_inputs(self.inputs(frame))

    def predict_table(self, table: Any, text_missing: Any = np.nan) -> np.ndarray | None:
        """Predictions for the rows of an Arrow ``table`` read from a file (a
        ``clients.arrow_input.TableChunk``'s, ``text_missing`` its), computed from its columns
        as they are, or None where that cannot be done (the caller then scores its frame:
        :meth:`predict`)."""
        from clients.table_input import forest_input

        model = self.loaded
        if model.fast is None or not table.num_rows:
            return None
        X = forest_input(table, self.info.contract, model.fast, text_missing)
        if X is None:
            return None
        try:
            predicted, _ = model.fast.finish(model.fast.forest_output(X, model.threads))
        except ValueError:  # refused by the forest: the frame's way says so in its words
            return None
        return np.asarray(predicted).ravel()

    def predict_inputs(self, X: pd.DataFrame) -> np.ndarray:
        """Predictions for rows already fitted to the contract (:meth:`inputs`)."""
        if not len(X):
            return np.array([], dtype=object if self.info.task == "classification" else float)
        try:
            return self.loaded.predict(X)
        except ValueError as exc:
            raise ClientError(f"the model rejected the input: {exc}") from exc
