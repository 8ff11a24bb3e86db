"""Where a model comes from: parse a source string and fetch its MLflow model folder.

Four kinds of source, all ending as a local folder holding the MLflow model files:

* ``local``: the pipeline's local artifact store (the offline default), e.g.
  ``model_export:prod``, ``local:model_export:v2`` or ``local:tagserve-penguins/model_export:prod``.
* ``wandb``: a W&B artifact, ``wandb:[entity/]project/model_export:prod`` (any alias or ``vN``).
* ``dir``: a folder, ``dir:/path`` or a plain existing path (as ``wandb artifact get --root``
  leaves it).
* ``mlflow``: an MLflow URI, ``runs:/<run_id>/<path>`` or ``models:/<name>@<alias>``.

Resolving a source is cheap and happens first (an unknown alias fails fast, before the slow
BentoML and MLflow imports); fetching the files (a W&B download) happens later, into a scratch
folder the caller owns.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from artifacts.store import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactRef,
    ArtifactVersion,
    LocalArtifactStore,
)
from importers.errors import SourceError
from inference.constants import DEFAULT_PROJECT, MODEL_ARTIFACT, PROD_ALIAS
from inference.envvars import scoped_env
from inference.errors import one_line

# DEFAULT_PROJECT is the pipeline's default W&B project and local-store namespace
# (pipeline/conf/config.yaml `main.project`); a test checks that the two stay equal.
DEFAULT_ARTIFACT = f"{MODEL_ARTIFACT}:{PROD_ALIAS}"
# How long a W&B API call may take before we call the server unreachable.
WANDB_TIMEOUT_SECONDS = 15
_MLFLOW_PREFIXES = ("runs:/", "models:/")
_VERSION_RE = re.compile(r"^v\d+$")


@dataclass(frozen=True)
class Source:
    """A resolved source: what it is, and how to get its files.

    Attributes:
        kind: ``local``, ``wandb``, ``dir`` or ``mlflow``.
        source_ref: The source in canonical form, e.g.
            ``local:tagserve-diamonds/model_export:prod``.
        fetch: Given a scratch folder, returns the folder holding the MLflow model files.
        artifact: The artifact version's name, e.g. ``model_export:v3`` (None for folders).
        qualified_name: The artifact's full name, e.g. ``entity/project/model_export:v3``.
        version: The artifact version, e.g. ``v3`` (None for folders and MLflow URIs).
        aliases: The aliases the artifact version holds.
        stage: The value of the ``stage`` label (the alias asked for, else ``prod`` if held).
        metadata: The artifact's metadata (metrics, lineage, run, commit...).
        expected_digest: The digest the store recorded, to check the files against.
        wandb_digest: W&B's own digest of the artifact (its manifest), for the record.
        fetch_test_data: Given a scratch folder, the file of the model's test data (the
            ``test_data`` artifact its evaluation used), or None where the source has none.
    """

    kind: str
    source_ref: str
    fetch: Callable[[Path], Path]
    artifact: str | None = None
    qualified_name: str | None = None
    version: str | None = None
    aliases: tuple[str, ...] = ()
    stage: str = "prod"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    expected_digest: str | None = None
    wandb_digest: str | None = None
    fetch_test_data: Callable[[Path], Path | None] = field(default=lambda _scratch: None)
    # The model's drift reference (``importers.reference``): given a scratch folder and the
    # reference's artifact name (``clean_data:reference``), (its file, its qualified name),
    # or (None, why not).
    fetch_reference: Callable[[Path, str], tuple[Path | None, str]] = field(
        default=lambda _scratch, _ref: (None, "the source is not an artifact store")
    )

    @property
    def version_label(self) -> str:
        """The first half of the BentoML tag version: ``v3``, or ``dir``/``mlflow``."""
        return self.version or self.kind


def resolve_source(
    source: str | None = None,
    *,
    home: Path | str | None = None,
    project: str | None = None,
    entity: str | None = None,
) -> Source:
    """Parse ``source`` and look it up (no file is copied yet).

    Args:
        source: A source string (see the module docstring); None means ``model_export:prod``
            in the local store, which is what ``make demo`` leaves.
        home: The pipeline's home (default: ``TAGSERVE_HOME``, else ``./.tagserve``).
        project: The local-store project or W&B project when the source does not name one
            (default: ``WANDB_PROJECT`` for W&B, else ``tagserve-diamonds``).
        entity: The W&B entity when the source does not name one (default: ``WANDB_ENTITY``).

    Raises:
        SourceError: Unknown artifact or alias, missing store or folder, no W&B access.
    """
    text = (source or "").strip() or DEFAULT_ARTIFACT
    if text.startswith("wandb:"):
        return _wandb_source(text.removeprefix("wandb:"), project, entity)
    if text.startswith("local:"):
        return _local_source(text.removeprefix("local:"), home, project)
    if text.startswith("dir:"):
        return _dir_source(Path(text.removeprefix("dir:")))
    if text.startswith(_MLFLOW_PREFIXES):
        return _mlflow_source(text)
    if Path(text).expanduser().is_dir():
        return _dir_source(Path(text))
    if ":" not in text and ("/" in text or text.startswith((".", "~"))):
        # Looks like a path, not an artifact reference: say so rather than "bad reference".
        raise SourceError(f"no such folder: {text}")
    return _local_source(text, home, project)


# -- local artifact store --------------------------------------------------------------------


def local_store_root(home: Path | str | None, project: str | None) -> Path:
    """The pipeline's local store of ``project``, as ``pipeline.tracking.store_root`` finds it."""
    base = home or os.environ.get("TAGSERVE_HOME") or ".tagserve"
    return Path(base).expanduser().resolve() / "store" / (project or DEFAULT_PROJECT)


def _local_source(ref: str, home: Path | str | None, project: str | None) -> Source:
    named_project, _, name_ref = ref.rpartition("/")
    project = named_project or project or DEFAULT_PROJECT
    parsed = _parse_ref(name_ref)
    root = local_store_root(home, project)
    source_ref = f"local:{project}/{parsed}"
    # Checked before LocalArtifactStore(root), which would create an empty store.
    if not root.is_dir():
        raise SourceError(
            f"no local artifact store at {root}: run `make demo` (python -m pipeline) first, "
            "or pass --home/--project or another source"
        )
    store = LocalArtifactStore(root)
    try:
        version = store.get(str(parsed))
    except ArtifactNotFound:
        raise SourceError(
            f"unknown artifact or alias {parsed} in {root} ({_available(root, parsed.name)})"
        ) from None
    return Source(
        kind="local",
        source_ref=source_ref,
        fetch=lambda _scratch: version.path,
        artifact=version.qualified_name,
        qualified_name=f"{project}/{version.qualified_name}",
        version=version.version,
        aliases=version.aliases,
        stage=stage_label(parsed.selector, version.aliases),
        metadata={"run_id": version.created_by, **_metadata_of(version)},
        expected_digest=version.digest,
        fetch_test_data=lambda _scratch: _local_test_data(store, version.metadata),
        fetch_reference=lambda _scratch, ref: _local_reference(store, project, ref),
    )


def _local_reference(store: LocalArtifactStore, project: str, ref: str) -> tuple[Path | None, str]:
    """The file of ``ref`` (``clean_data:reference``) in the model's local store."""
    try:
        version = store.get(ref)
        return version.file(), f"local:{project}/{version.qualified_name}"
    except ArtifactError as exc:
        return None, f"no {ref} in the local store of {project} ({one_line(exc)})"


def _local_test_data(store: LocalArtifactStore, metadata: Mapping[str, Any]) -> Path | None:
    """The file of the ``test_data`` version the model was evaluated on, if the store still
    holds it with the recorded digest."""
    test = metadata.get("test_data") or {}
    if not test.get("ref"):
        return None
    try:
        version = store.get(str(test["ref"]))
        if test.get("digest") and version.digest != test["digest"]:
            return None
        return version.file()
    except ArtifactError:
        return None


def _metadata_of(version: ArtifactVersion) -> dict[str, Any]:
    # run_id is in the metadata too; the manifest's created_by is the fallback.
    return {k: v for k, v in version.metadata.items() if v is not None}


def _available(root: Path, name: str) -> str:
    """What a user could have asked for instead, for the 'unknown alias' message."""
    artifact_dir = root / name
    if not artifact_dir.is_dir():
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        return f"artifacts: {', '.join(names) or 'none'}"
    versions = sorted(
        (p.name for p in artifact_dir.iterdir() if _VERSION_RE.match(p.name)),
        key=lambda v: int(v[1:]),
    )
    alias_dir = artifact_dir / "aliases"
    aliases = (
        sorted(p.name for p in alias_dir.iterdir() if not p.name.startswith("."))
        if (alias_dir.is_dir())
        else []
    )
    return f"versions: {', '.join(versions) or 'none'}; aliases: {', '.join(aliases) or 'none'}"


def stage_label(selector: str, aliases: tuple[str, ...] | list[str]) -> str:
    """The ``stage`` label: the alias asked for, else ``prod`` if the version holds it.

    ``latest`` is no stage (it moves with every training run), nor is ``vN``; a version asked
    for by either that holds no ``prod`` gets ``none``.
    """
    if not _VERSION_RE.match(selector) and selector != "latest":
        return selector
    return "prod" if "prod" in aliases else "none"


def _parse_ref(ref: str) -> ArtifactRef:
    try:
        return ArtifactRef.parse(ref)
    except ArtifactError as exc:
        raise SourceError(str(exc)) from None


# -- W&B -------------------------------------------------------------------------------------


def _wandb_source(ref: str, project: str | None, entity: str | None) -> Source:
    parts = ref.split("/")
    if len(parts) > 3 or not all(parts):
        raise SourceError(f"bad W&B reference {ref!r}: expected [entity/]project/name:alias")
    parsed = _parse_ref(parts[-1])
    project = (
        parts[-2]
        if len(parts) >= 2
        else (project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT)
    )
    entity = parts[0] if len(parts) == 3 else (entity or os.environ.get("WANDB_ENTITY"))
    path = "/".join(p for p in (entity, project, str(parsed)) if p)
    artifact = _wandb_artifact(path)
    aliases = tuple(artifact.aliases)

    def fetch(scratch: Path) -> Path:
        # A fresh root: W&B leaves files already in `root` alone, so a reused folder could
        # mix two versions.
        root = scratch / "wandb"
        try:
            return Path(artifact.download(root=str(root)))
        except Exception as exc:  # the SDK raises several types, all with a readable message
            raise SourceError(f"download of W&B artifact {path} failed: {one_line(exc)}") from exc

    return Source(
        kind="wandb",
        source_ref=f"wandb:{path}",
        fetch=fetch,
        artifact=artifact.name,
        qualified_name=artifact.qualified_name,
        version=artifact.version,
        aliases=aliases,
        stage=stage_label(parsed.selector, aliases),
        metadata={k: v for k, v in dict(artifact.metadata or {}).items() if v is not None},
        wandb_digest=artifact.digest,
        fetch_test_data=lambda scratch: _wandb_test_data(artifact, scratch),
        fetch_reference=lambda scratch, ref: _wandb_reference(artifact, scratch, ref),
    )


def _wandb_reference(model: Any, scratch: Path, ref: str) -> tuple[Path | None, str]:
    """The file of ``ref`` (``clean_data:reference``) in the W&B model's project, if
    reachable (else the model is served unmonitored, and says why)."""
    project = "/".join(model.qualified_name.split("/")[:-1])
    try:
        artifact = _wandb_artifact(f"{project}/{ref}")
        folder = Path(artifact.download(root=str(scratch / "reference")))
    except Exception as exc:  # unreachable or absent: no reference
        return None, f"{project}/{ref} could not be fetched from W&B ({one_line(exc)})"
    files = [p for p in folder.iterdir() if p.is_file()]
    if len(files) != 1:
        return None, f"W&B artifact {project}/{ref} holds {len(files)} files, not one"
    return files[0], f"wandb:{artifact.qualified_name}"


def _wandb_test_data(model: Any, scratch: Path) -> Path | None:
    """The file of the ``test_data`` version the W&B model was evaluated on, if reachable
    (the fast path is then also checked on it; without it, on the input example only)."""
    ref = (dict(model.metadata or {}).get("test_data") or {}).get("ref")
    if not ref:
        return None
    project = "/".join(model.qualified_name.split("/")[:-1])
    try:
        folder = Path(_wandb_artifact(f"{project}/{ref}").download(root=str(scratch / "test")))
    except Exception:  # unreachable or gone: the check falls back to the input example
        return None
    files = [p for p in folder.iterdir() if p.is_file()]
    return files[0] if len(files) == 1 else None


def _wandb_artifact(path: str) -> Any:
    """``wandb.Api().artifact(path)``, with the SDK's errors turned into one readable line."""
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a project dependency
        raise SourceError("the W&B source needs the wandb package") from None
    # The SDK prints login hints to the terminal; the importer reports one line itself.
    with scoped_env(WANDB_SILENT="true"):
        try:
            api = wandb.Api(timeout=WANDB_TIMEOUT_SECONDS)
            return api.artifact(path)
        except Exception as exc:
            raise SourceError(_wandb_problem(exc, path)) from exc


def _wandb_problem(exc: Exception, path: str) -> str:
    from wandb.errors import AuthenticationError, CommError, UsageError

    message = one_line(exc)
    if isinstance(exc, UsageError) and "api key" in message.lower():
        return (
            "no W&B credentials: set WANDB_API_KEY or run `wandb login` "
            "(offline, import from the local store instead: model_export:prod)"
        )
    if isinstance(exc, AuthenticationError):
        return f"W&B did not accept the credentials or cannot be reached: {message}"
    # Api.artifact wraps every failure in CommError; "not found" comes from a ValueError.
    cause = getattr(exc, "exc", None)
    if (
        isinstance(exc, ValueError | LookupError)
        or isinstance(cause, ValueError)
        or ("not found" in message.lower())
    ):
        return f"unknown W&B artifact or alias {path}: {message}"
    if isinstance(exc, CommError):
        return f"cannot reach W&B for {path}: {message}"
    return f"W&B lookup of {path} failed: {type(exc).__name__}: {message}"


# -- folders and MLflow URIs -----------------------------------------------------------------


def _dir_source(path: Path) -> Source:
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise SourceError(f"no such folder: {path}")
    # A bare folder carries no alias: it is imported to be served, hence stage=prod.
    return Source(kind="dir", source_ref=f"dir:{path}", fetch=lambda _scratch: path)


def _mlflow_source(uri: str) -> Source:
    # models:/name@alias names its stage; runs:/ and models:/name/N do not.
    alias = re.match(r"^models:/[^/@]+@([^/]+)", uri)
    run = re.match(r"^runs:/([^/]+)", uri)

    def fetch(scratch: Path) -> Path:
        from mlflow.artifacts import download_artifacts

        try:
            with quiet_mlflow():
                return Path(download_artifacts(artifact_uri=uri, dst_path=str(scratch / "mlflow")))
        except Exception as exc:  # MLflow raises several types for "not found"/"unreachable"
            raise SourceError(f"cannot fetch {uri} from MLflow: {one_line(exc)}") from exc

    return Source(
        kind="mlflow",
        source_ref=uri,
        fetch=fetch,
        stage=alias.group(1) if alias else "prod",
        metadata={"run_id": run.group(1)} if run else {},
    )


def quiet_mlflow():
    """No MLflow download progress bars (they would break the one-line output)."""
    return scoped_env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
