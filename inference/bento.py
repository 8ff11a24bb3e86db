"""Models in the BentoML model store, as the importer puts them there."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
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


# A tag part as BentoML writes it: lowercase letters, digits and -._, not at the ends.
TAG_PART = re.compile(r"^[a-z0-9](?:[-._a-z0-9]*[a-z0-9])?$")


@dataclass
class StoredInfo:
    labels: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class StoredModel:
    """A model of the BentoML store read from its files: what :func:`mlflow_folder` and
    :func:`fastpath_folder` need of a ``bentoml.Model``."""

    tag: str
    path: Path
    info: StoredInfo

    def path_of(self, item: str) -> str:
        return str(self.path / item)


def store_models_folder() -> Path:
    """The model store's folder, as BentoML finds it: ``$BENTOML_HOME/models``, by default
    ``~/bentoml/models``."""
    home = os.environ.get("BENTOML_HOME") or os.path.join(os.path.expanduser("~"), "bentoml")
    return Path(os.path.expandvars(home)) / "models"


def find_in_store(tag: str) -> StoredModel | None:
    """The model ``tag`` (``name``, ``name:latest`` or ``name:version``) read straight from
    the store's files, without importing BentoML (over a second of a command's start-up), or
    None for anything else (a version prefix, a missing or odd model): ask :func:`get_model`
    then, for BentoML's own answer or error."""
    import yaml

    name, _, version = tag.partition(":")
    if not TAG_PART.match(name) or (version and not TAG_PART.match(version)):
        return None
    root = store_models_folder() / name
    if not version or version == "latest":
        try:
            version = (root / "latest").read_text().strip()
        except OSError:
            return None
        if not TAG_PART.match(version):
            return None
    folder = root / version
    try:
        info = yaml.safe_load((folder / "model.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(info, dict) or (info.get("name"), str(info.get("version"))) != (
        name,
        version,
    ):
        return None
    labels, metadata = info.get("labels") or {}, info.get("metadata") or {}
    if not isinstance(labels, dict) or not isinstance(metadata, dict):
        return None
    return StoredModel(f"{name}:{version}", folder, StoredInfo(labels, metadata))


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
