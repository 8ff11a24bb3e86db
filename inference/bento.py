"""Models in the BentoML model store, as the importer puts them there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from inference.constants import MLFLOW_FOLDER
from inference.errors import TagserveError

# This project runs offline: BentoML's usage analytics would try to reach the network.
# Set before bentoml is first imported by this process (it caches the answer).
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


def get_model(tag: str) -> Any:
    """The BentoML model ``tag`` (``name:version`` or ``name:latest``).

    Raises:
        TagserveError: No such model, or a malformed tag.
    """
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    try:
        return bentoml.models.get(tag)
    except NotFound:
        raise TagserveError(
            f"no model {tag!r} in the BentoML model store: import it with "
            "`python -m importers` (or name an imported model)"
        ) from None
    except (BentoMLException, ValueError) as exc:
        raise TagserveError(f"bad BentoML model tag {tag!r}: {exc}") from None


def mlflow_folder(model: Any) -> Path:
    """The MLflow model folder inside the BentoML model ``model`` (a model or a tag)."""
    if isinstance(model, str):
        model = get_model(model)
    path = Path(model.path_of(MLFLOW_FOLDER))
    if not (path / "MLmodel").is_file():
        raise TagserveError(f"BentoML model {model.tag} holds no MLflow model ({path})")
    return path
