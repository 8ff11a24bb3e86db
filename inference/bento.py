"""Models in the BentoML model store, as the importer puts them there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from inference.constants import FASTPATH_FOLDER, FASTPATH_METADATA, MLFLOW_FOLDER, PROD_ALIAS
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


# The label the importer keeps true: exactly one model per name is ``stage=prod`` (the one the
# artifact store's ``prod`` alias named at its last import); a former prod is ``archived``.
STAGE_LABEL = "stage"
ARCHIVED_STAGE = "archived"


def stage_of(model: Any) -> str:
    """The ``stage`` label of a BentoML model (``prod``, ``archived``, ``none``, an alias)."""
    return str(model.info.labels.get(STAGE_LABEL) or "none")


def prod_model(name: str) -> Any:
    """The model of ``name`` labelled ``stage=prod``: what serve and release ship by default.

    Raises:
        TagserveError: None is, or several are (a store imported into before the importer
            kept the label true: importing the prod model again relabels the others).
    """
    import bentoml

    found = [
        m for m in bentoml.models.list(name) if m.tag.name == name and stage_of(m) == PROD_ALIAS
    ]
    if not found:
        raise TagserveError(
            f"no model {name!r} labelled stage=prod in the BentoML model store: import the "
            "prod model with `python -m importers` (or name a model explicitly)"
        )
    if len(found) > 1:
        tags = ", ".join(sorted(str(m.tag) for m in found))
        raise TagserveError(
            f"several models {name!r} are labelled stage=prod ({tags}): import the prod model "
            "again (`python -m importers`) to relabel the others"
        )
    return found[0]


def serving_model(tag: str, *, allow_non_prod: bool = False) -> Any:
    """The model to serve or release for ``tag``: ``name`` or ``name:latest`` mean the prod
    model of ``name`` (never merely the newest import); an exact tag must be the prod model
    unless ``allow_non_prod``.

    Raises:
        TagserveError: No such model, no prod model, or a non-prod model not allowed.
    """
    name, _, version = tag.partition(":")
    if version in ("", "latest"):
        return prod_model(name)
    model = get_model(tag)
    if stage_of(model) != PROD_ALIAS and not allow_non_prod:
        raise TagserveError(
            f"model {model.tag} is not the prod model (stage={stage_of(model)}): ship the prod "
            f"model ({name}:latest), or pass --allow-non-prod (make: ALLOW_NON_PROD=1) to ship "
            "this one anyway"
        )
    return model


def fastpath_folder(model: Any) -> Path | None:
    """The exact fast path the importer saved in the BentoML model ``model``, or None when
    its import-time check found it not exact (or the model predates the fast path)."""
    report = dict(model.info.metadata).get(FASTPATH_METADATA) or {}
    path = Path(model.path_of(FASTPATH_FOLDER))
    return path if report.get("exact") and path.is_dir() else None
