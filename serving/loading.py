"""How the service reads an imported model of the BentoML store: its input contract, and the
model loaded for serving (checked on its input example at start-up)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from inference.bento import fastpath_folder, mlflow_folder
from inference.constants import MLFLOW_FOLDER, SERVING_EXAMPLE
from inference.contract import Contract, contract_from_signature
from inference.errors import InputError
from inference.model import LoadedModel, load_model
from serving.protocol import example_frame


def model_contract(model: Any) -> Contract:
    """The contract of an imported model: the importer's metadata, else the MLmodel file."""
    meta = dict(model.info.metadata)
    if "signature" not in meta or "task" not in meta:
        from inference.contract import read_mlmodel, signature_of

        mlmodel = read_mlmodel(mlflow_folder(model))
        meta.setdefault("signature", signature_of(mlmodel))
        for key, value in (mlmodel.get("metadata") or {}).items():
            meta.setdefault(key, value)
    return contract_from_signature((meta.get("signature") or {}).get("inputs"), meta)


def load_served(model: Any, contract: Contract) -> LoadedModel:
    """The BentoML ``model`` loaded for serving: its fast path only if the import proved it
    exact; ``load_model`` re-checks it on the input example and falls back to sklearn (with a
    warning) if it differs."""
    folder = Path(model.path_of(MLFLOW_FOLDER))
    loaded = load_model(folder, contract, fastpath_folder(model))
    with contextlib.suppress(OSError, InputError):  # fail now rather than on the first request
        loaded.predict(example_frame((folder / SERVING_EXAMPLE).read_bytes(), contract))
    return loaded
