"""How the service reads an imported model of the BentoML store: its input contract, and the
model loaded for serving (checked on its input example at start-up)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.bento import fastpath_folder, mlflow_folder
from inference.constants import MLFLOW_FOLDER, SERVING_EXAMPLE
from inference.contract import Contract, contract_from_signature
from inference.errors import InputError
from serving.protocol import example_frame

if TYPE_CHECKING:
    from inference.model import LoadedModel


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
    exact; ``load_model`` re-checks it on the input example against the answers sklearn gave
    there at import, and falls back to sklearn (with a warning) if it differs.

    Loaded lazily: where the fast path serves, scikit-learn (and scipy) are imported only if
    a call needs them, so a worker holds only its engine; the check on the example and the
    prediction below compile and warm that engine before the first request."""
    # Imported here, in a worker: `bentoml serve` reads only the contract (model_contract).
    from inference.model import load_model

    folder = Path(model.path_of(MLFLOW_FOLDER))
    loaded = load_model(folder, contract, fastpath_folder(model), lazy=True)
    with contextlib.suppress(OSError, InputError):  # fail now rather than on the first request
        loaded.predict(example_frame((folder / SERVING_EXAMPLE).read_bytes(), contract))
    return loaded
