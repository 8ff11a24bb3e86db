"""Atomic, idempotent writes into the BentoML model store.

BentoML's own save (``bentoml.models._create`` -> ``Model.save`` -> ``Store.register``)
creates ``<store>/<name>/<version>/`` first and then copies the files into it, so an import
killed mid-copy leaves a partial model that ``bentoml models list`` trips over. Here
``bentoml.mlflow.import_model`` saves into a private *staging* model store instead, next to
the real one (same file system), and the finished model folder is published with a single
``os.rename``: the real store holds either the whole model or nothing.

A file lock per model name serializes publishers, so two imports of the same artifact at once
end with one model (the second one finds it and reports "already imported"). Staging folders
of killed imports are removed by the next import (no live process holds their lock).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from artifacts.store import directory_digest
from importers.errors import ModelImportError
from inference.bento import ARCHIVED_STAGE, STAGE_LABEL
from inference.constants import MLFLOW_FOLDER, PROD_ALIAS
from inference.files import move_folder_into_place, write_atomically

STAGING_DIRNAME = ".tagserve-import"
LOCK_TIMEOUT_SECONDS = 600
# The model-store override below is process-wide: one in-process import at a time.
_STORE_OVERRIDE = threading.Lock()


@dataclass(frozen=True)
class Existing:
    """What the store holds under a tag: nothing, a partial folder, or a whole model."""

    state: str  # "absent" | "partial" | "complete"
    path: Path


def store_dir() -> Path:
    """The BentoML model store folder (``$BENTOML_HOME/models`` unless configured otherwise)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.model_store_dir.get())


def staging_root() -> Path:
    """Scratch space on the store's file system, outside the folders BentoML scans."""
    return store_dir().parent / STAGING_DIRNAME


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """A scratch folder for one import, always removed afterwards.

    The folder's lock file is held while the import runs; the kernel releases it when the
    process dies, which is how a later import tells a killed import's leftovers from a
    running one's (see :func:`remove_stale_workspaces`).
    """
    root = staging_root()
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_workspaces(root)
    path = root / uuid.uuid4().hex
    lock = FileLock(f"{path}.lock")
    lock.acquire(timeout=LOCK_TIMEOUT_SECONDS)  # before mkdir: never a folder without owner
    try:
        path.mkdir()
        yield path
    finally:
        _rmtree(path)
        lock.release()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}.lock")


def remove_stale_workspaces(root: Path) -> list[Path]:
    """Remove the workspaces no live import holds (those of killed imports)."""
    removed = []
    for path in sorted(root.iterdir()):
        if not path.is_dir():
            continue
        lock = FileLock(f"{path}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # a running import
        try:
            _rmtree(path)
            removed.append(path)
        finally:
            lock.release()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}.lock")
    return removed


def lookup(tag: str) -> Existing:
    """What the real store holds under ``tag``."""
    name, version = tag.split(":", 1)
    path = store_dir() / name / version
    if not path.exists():
        return Existing("absent", path)
    if not (path / "model.yaml").is_file() or not (path / MLFLOW_FOLDER).is_dir():
        return Existing("partial", path)
    return Existing("complete", path)


def check_digest(existing: Existing, tag: str, digest: str) -> None:
    """Make sure the model already stored under ``tag`` holds exactly the artifact's files.

    Raises:
        ModelImportError: Its files differ (edited or corrupted in the store).
    """
    stored = directory_digest(existing.path / MLFLOW_FOLDER)
    if stored != digest:
        raise ModelImportError(
            f"BentoML model {tag} exists but its files do not match the artifact (digest "
            f"{stored[:12]}, expected {digest[:12]}): remove it with `bentoml models delete "
            f"{tag}` and import again"
        )


def save_atomically(
    tag: str,
    digest: str,
    ws: Path,
    save: Callable[[], Any],
) -> bool:
    """Run ``save`` (a ``bentoml.mlflow.import_model`` call) against a staging store, then
    publish the finished model into the real store with one rename.

    Args:
        tag: ``name:version`` of the model ``save`` creates.
        digest: The artifact digest the model's ``mlflow_model/`` must have.
        ws: This import's workspace (see :func:`workspace`).
        save: Saves the model into whatever store BentoML's container provides.

    Returns:
        True if this call published the model, False if an equal one was already there.

    Raises:
        ModelImportError: Saving failed, or the staged copy differs from the artifact.
    """
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    name, version = tag.split(":", 1)
    staged_store = ws / "store"
    staged_store.mkdir()
    with _STORE_OVERRIDE, _overridden(BentoMLContainer.model_store, ModelStore(str(staged_store))):
        save()
    staged = staged_store / name / version
    if not (staged / "model.yaml").is_file():
        raise ModelImportError(f"BentoML did not save {tag} (no model.yaml in {staged})")
    # The digest proves the bytes that enter the store are the ones that were verified.
    copied = directory_digest(staged / MLFLOW_FOLDER)
    if copied != digest:
        raise ModelImportError(
            f"the copy of the model differs from the artifact (digest {copied[:12]}, expected "
            f"{digest[:12]}): were its files changed during the import?"
        )
    return _publish(tag, staged, ws)


@contextlib.contextmanager
def _overridden(provider: Any, value: Any) -> Iterator[None]:
    """``provider.patch(value)``, restored on exceptions too.

    simple_di's ``patch`` restores only when its body returns normally: after a failed save
    BentoML would go on using the staging store.
    """
    patch = provider.patch(value)
    patch.__enter__()
    try:
        yield
    finally:
        patch.__exit__(None, None, None)


def _publish(tag: str, staged: Path, ws: Path) -> bool:
    name, version = tag.split(":", 1)
    target_parent = store_dir() / name
    with FileLock(str(staging_root() / f"publish-{name}.lock"), timeout=LOCK_TIMEOUT_SECONDS):
        existing = lookup(tag)
        if existing.state == "complete":
            return False
        if existing.state == "partial":
            # Left by a non-atomic writer (a plain `bentoml` save that was killed): it
            # cannot be loaded, so it is replaced. Moved aside first so that the store never
            # shows a half-deleted folder.
            os.rename(existing.path, ws / "replaced-partial")
        target_parent.mkdir(parents=True, exist_ok=True)
        move_folder_into_place(staged, existing.path)
        _write_latest(target_parent, version)
    return True


def _write_latest(model_dir: Path, version: str) -> None:
    """Point BentoML's ``latest`` at ``version``, unless it names the model that is prod now:
    ``name:latest`` means the prod model while there is one (a non-prod import must not take
    it over); :func:`promote` moves it to a newly promoted model."""
    current = _read_latest(model_dir)
    if current and current != version and _stage(model_dir / current) == PROD_ALIAS:
        return
    write_atomically(model_dir / "latest", lambda out: out.write(version.encode()))


def _read_latest(model_dir: Path) -> str:
    try:
        return (model_dir / "latest").read_text().strip()
    except FileNotFoundError:
        return ""


def _stage(version_dir: Path) -> str:
    """The ``stage`` label in a stored model's ``model.yaml`` ("" if unreadable)."""
    import yaml

    try:
        info = yaml.safe_load((version_dir / "model.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return ""
    labels = info.get("labels") if isinstance(info, dict) else None
    return str((labels or {}).get(STAGE_LABEL) or "")


def _set_stage(version_dir: Path, stage: str) -> None:
    """Rewrite the ``stage`` label of a stored model (its files stay as they are). BentoML
    models are immutable but for ``model.yaml``, which ``Model.flush`` rewrites in place; this
    replaces it atomically instead, keeping everything else as BentoML wrote it."""
    import yaml

    path = version_dir / "model.yaml"
    info = yaml.safe_load(path.read_text())
    info["labels"] = {**(info.get("labels") or {}), STAGE_LABEL: stage}
    text = yaml.safe_dump(info, sort_keys=False)
    write_atomically(
        path, lambda out: out.write(text.encode()), mode=stat.S_IMODE(path.stat().st_mode)
    )


def promote(tag: str) -> list[str]:
    """Make ``tag`` the one model of its name labelled ``stage=prod`` and point ``latest`` at
    it: a model imported from the artifact store's ``prod`` (again, after a rollback) is what
    serve and release ship. Former prod models become ``stage=archived``.

    Returns:
        The tags relabelled ``archived``.
    """
    name, version = tag.split(":", 1)
    model_dir = store_dir() / name
    archived = []
    with FileLock(str(staging_root() / f"publish-{name}.lock"), timeout=LOCK_TIMEOUT_SECONDS):
        for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
            if version_dir.name == version:
                if _stage(version_dir) != PROD_ALIAS:
                    _set_stage(version_dir, PROD_ALIAS)
            elif _stage(version_dir) == PROD_ALIAS:
                _set_stage(version_dir, ARCHIVED_STAGE)
                archived.append(f"{name}:{version_dir.name}")
        write_atomically(model_dir / "latest", lambda out: out.write(version.encode()))
    return archived


def _rmtree(path: Path) -> None:
    def force(func: Callable[..., Any], target: str, _exc_info: Any) -> None:
        # Artifact files are read-only; their folders may be too after a copy.
        os.chmod(os.path.dirname(target), stat.S_IRWXU)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(target, stat.S_IRWXU)
        func(target)

    if path.exists():
        shutil.rmtree(path, onerror=force)
