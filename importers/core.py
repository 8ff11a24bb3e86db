"""Import a verified MLflow model into the BentoML model store, with its lineage.

The flow of :func:`import_model`:

1. resolve the source (cheap: an unknown alias fails before anything is copied);
2. fetch the files into a scratch folder (a W&B download) and digest them;
3. if the store already holds the tag (``<name>:<version>-<digest12>``), stop: "already
   imported" (idempotent: one artifact, one tag);
4. verify the model (MLmodel, flavors, signature, loads, predicts its example as recorded);
5. build the exact fast path and check it against sklearn on the model's test data and input
   example (``importers.fast``): saved beside the MLflow files only if bit-exact, and the
   check's report recorded in the metadata (``fast_path``) either way;
6. compute the drift reference the service monitors against (``importers.reference``: from
   the model's ``clean_data:reference`` and its predictions on its test data), saved beside
   the MLflow files (``monitoring/``); without one, the reason in the metadata
   (``monitoring``);
7. ``bentoml.mlflow.import_model`` into a staging store, check the copy's digest, and
   publish it with one rename (atomic: all or nothing in the real store).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from artifacts.store import directory_digest
from importers import bento_store
from importers.errors import ModelImportError
from importers.fast import prepare_fast_path, read_test_data
from importers.reference import MONITORING_METADATA, build_reference
from importers.sources import Source, quiet_mlflow, resolve_source
from importers.verify import VerifiedModel, read_requirements, verify_model
from inference.bento import get_model
from inference.constants import (
    DEFAULT_PROJECT,
    FASTPATH_FOLDER,
    FASTPATH_METADATA,
    MLFLOW_FOLDER,
    PROD_ALIAS,
)
from inference.domain import BOUNDS_METADATA, DOMAIN_METADATA, model_domain
from inference.drift import MONITORING_FOLDER
from inference.errors import TagserveError

# The pipeline's project name is the model's name in the BentoML store.
DEFAULT_MODEL_NAME = DEFAULT_PROJECT
DIGEST_PREFIX = 12


@dataclass(frozen=True)
class ImportResult:
    """The outcome of one import.

    Attributes:
        tag: The BentoML tag, e.g. ``tagserve-diamonds:v3-1a2b3c4d5e6f``.
        created: True if this call added the model, False if it was already there.
        source_ref: The source in canonical form, e.g.
            ``local:tagserve-diamonds/model_export:prod``.
        digest: sha256 of the MLflow model files (``artifacts.store.directory_digest``).
        source: ``local``, ``wandb``, ``dir`` or ``mlflow``.
        version: The artifact version (``v3``), None for folders and MLflow URIs.
        path: The model's folder in the BentoML store.
    """

    tag: str
    created: bool
    source_ref: str
    digest: str
    source: str
    version: str | None
    path: str

    @property
    def status(self) -> str:
        return "imported" if self.created else "already imported"

    def line(self) -> str:
        """The one line the CLI prints."""
        return f"{self.status} {self.tag} from {self.source_ref} (digest {self.digest})"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, **asdict(self)}


def import_model(
    source: str | None = None,
    *,
    name: str | None = None,
    home: Path | None = None,
    project: str | None = None,
    entity: str | None = None,
) -> ImportResult:
    """Import the model ``source`` names into the BentoML model store (verified, idempotent,
    atomic).

    Args:
        source: ``model_export:prod`` / ``local:[project/]model_export:v2`` (the pipeline's
            local store), ``wandb:[entity/]project/model_export:prod``, ``dir:/path`` or an
            existing folder, ``runs:/...`` or ``models:/...``. None: ``model_export:prod`` in
            the local store, as ``make demo`` leaves it.
        name: The BentoML model name (default ``tagserve-diamonds``).
        home: The pipeline's home for the local store (default ``TAGSERVE_HOME`` or
            ``./.tagserve``).
        project: The local-store or W&B project when the source names none.
        entity: The W&B entity when the source names none (default ``WANDB_ENTITY``).

    Returns:
        The tag and whether this call created it.

    Raises:
        ModelImportError: The source cannot be read, the model fails verification
            (:class:`~importers.errors.ModelRejected`) or saving failed. Nothing enters the
            store then.
    """
    model_name = _model_name(name)
    resolved = resolve_source(source, home=home, project=project, entity=entity)
    with bento_store.workspace() as ws:
        folder = resolved.fetch(ws)
        digest = _digest(folder, resolved)
        tag = f"{model_name}:{resolved.version_label}-{digest[:DIGEST_PREFIX]}"
        existing = bento_store.lookup(tag)
        if existing.state == "complete":
            bento_store.check_digest(existing, tag, digest)
            created = False
        else:
            verified = verify_model(folder)
            test = read_test_data(resolved.fetch_test_data(ws), verified)
            fast_folder, fast_report = prepare_fast_path(verified, test, ws)
            reference_folder, reference_report = build_reference(
                resolved, verified, test, ws, domain=domain_of(verified)
            )
            metadata = {
                **build_metadata(resolved, digest, verified),
                FASTPATH_METADATA: fast_report,
                MONITORING_METADATA: reference_report,
            }
            folders = {FASTPATH_FOLDER: fast_folder, MONITORING_FOLDER: reference_folder}

            def save() -> None:
                _bentoml_import(tag, folder, resolved, metadata, folders)

            created = bento_store.save_atomically(tag, digest, ws, save)
        if resolved.stage == PROD_ALIAS:
            # Keep the label true: this model is prod now (after a rollback too), no other is.
            bento_store.promote(tag)
        return _result(tag, created, resolved, digest, bento_store.lookup(tag).path)


def _model_name(name: str | None) -> str:
    from bentoml._internal.tag import validate_tag_str

    model_name = name or DEFAULT_MODEL_NAME
    try:
        validate_tag_str(model_name)
    except Exception as exc:  # BentoML raises ValueError/InvalidArgument
        raise ModelImportError(f"invalid model name {model_name!r}: {exc}") from None
    if model_name != model_name.lower():
        raise ModelImportError(f"invalid model name {model_name!r}: use lower case")
    return model_name


def _digest(folder: Path, source: Source) -> str:
    """The digest of ``folder``, checked against the one the store recorded, if any."""
    if not folder.is_dir():
        raise ModelImportError(f"not an MLflow model: {folder} is not a folder")
    digest = directory_digest(folder)
    if source.expected_digest and digest != source.expected_digest:
        raise ModelImportError(
            f"corrupt artifact {source.artifact}: its files' digest {digest[:12]} differs from "
            f"the recorded {source.expected_digest[:12]} (a model file was changed or damaged)"
        )
    return digest


def _bentoml_import(
    tag: str, folder: Path, source: Source, metadata: dict[str, Any], extra: dict[str, Path | None]
) -> None:
    """Save the model into the (staging) store: its MLflow files, and beside ``mlflow_model/``
    each folder of ``extra`` it has (the fast path's ``fastpath/``, the drift reference's
    ``monitoring/``)."""
    import bentoml

    try:
        with quiet_mlflow():
            bentoml.mlflow.import_model(
                tag,
                str(folder),
                # The default, stated so that BentoML does not log that it picked one.
                signatures={"predict": {"batchable": False}},
                labels=build_labels(source),
                metadata=metadata,
            )
            saved = Path(bentoml.models.get(tag).path)
            for name, extra_folder in extra.items():
                if extra_folder is not None:
                    shutil.copytree(extra_folder, saved / name)
    except ModelImportError:
        raise
    except Exception as exc:  # disk full, permissions, BentoML refusing the model...
        raise ModelImportError(
            f"saving {tag} into the BentoML store failed: {type(exc).__name__}: {exc}"
        ) from exc


def build_labels(source: Source) -> dict[str, str]:
    """``stage``, ``source`` and ``artifact_version`` labels (strings, as BentoML wants)."""
    labels = {"stage": source.stage, "source": source.kind}
    if source.version:
        labels["artifact_version"] = source.version
    return labels


def build_metadata(source: Source, digest: str, verified: VerifiedModel) -> dict[str, Any]:
    """The model's lineage and interface, as ``bentoml models get`` shows them.

    BentoML refuses ``None`` in metadata, so unknown values are left out: ``.get(key)``
    returns None for them all the same.
    """
    meta = source.metadata
    lineage = dict(meta.get("lineage") or {})
    if meta.get("test_data"):
        lineage["test_data"] = meta["test_data"]
    metrics = {"val": meta.get("val_metrics"), "test": meta.get("test_metrics")}
    metadata = {
        "artifact": source.artifact,
        "artifact_qualified_name": source.qualified_name,
        "source": source.kind,
        "source_ref": recorded_ref(source, digest),
        "version": source.version,
        "digest": digest,
        "wandb_digest": source.wandb_digest,
        "aliases": list(source.aliases),
        "run_id": meta.get("run_id"),
        "git_commit": meta.get("git_commit"),
        "metrics": {k: v for k, v in metrics.items() if v},
        "task": verified.task,
        "classes": verified.classes,
        "target": verified.target or meta.get("target"),
        "feature_columns": verified.feature_columns,
        "signature": verified.facts.signature,
        DOMAIN_METADATA: domain_of(verified),
        "lineage": lineage,
        "requirements": verified.facts.requirements,
        "mlflow_version": verified.facts.mlflow_version,
    }
    return _without_none(metadata)


def domain_of(verified: VerifiedModel) -> dict[str, Any]:
    """The model's domain (``inference.domain``): the closed categories its fitted Pipeline
    encodes, and the bounds its MLflow model records (``bounds``, from the pipeline's rules)."""
    types = {c.name: c.type for c in verified.facts.contract.columns}
    bounds = verified.facts.mlflow_metadata.get(BOUNDS_METADATA)
    return model_domain(verified.pipeline, types, bounds if isinstance(bounds, dict) else None)


def recorded_ref(source: Source, digest: str) -> str:
    """The source as the model's metadata records it (and /metadata shows it): a folder by
    its name and digest prefix, never the absolute path of the machine that imported it."""
    if source.kind == "dir":
        name = source.source_ref.removeprefix("dir:").rstrip("/").rpartition("/")[2]
        return f"dir:{name}@{digest[:DIGEST_PREFIX]}"
    return source.source_ref


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value if v is not None]
    return value


def _result(tag: str, created: bool, source: Source, digest: str, path: Path) -> ImportResult:
    return ImportResult(
        tag=tag,
        created=created,
        source_ref=source.source_ref,
        digest=digest,
        source=source.kind,
        version=source.version,
        path=str(path),
    )


def model_requirements(tag_or_bento_model: Any) -> list[str]:
    """The pinned requirements of an imported model (MLflow's ``requirements.txt``).

    Args:
        tag_or_bento_model: A BentoML tag (``tagserve-diamonds:v3-...`` or
            ``tagserve-diamonds`` for the latest) or a ``bentoml.Model``.

    Returns:
        Lines such as ``scikit-learn==1.7.2``, for a bento's ``python.packages``.
    """
    return read_requirements(requirements_dir(tag_or_bento_model))


def requirements_dir(tag_or_bento_model: Any) -> Path:
    """The folder holding the imported model's MLflow files, ``requirements.txt`` included
    (a bentofile's ``python.requirements_txt`` can point at the file in it)."""
    import bentoml

    model = tag_or_bento_model
    if not isinstance(model, bentoml.Model):
        try:
            model = get_model(str(tag_or_bento_model))
        except TagserveError as exc:
            raise ModelImportError(str(exc)) from None
    return Path(model.path_of(MLFLOW_FOLDER))
