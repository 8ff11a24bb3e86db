"""Artifact stores with Weights & Biases semantics.

An artifact has a name, immutable versions ``v0, v1, ...``, movable aliases (``latest``,
``prod``, ``reference``, ...), a type, a content digest and free-form metadata, and the store
records which run produced or used which version. Two backends share one interface:

* :class:`LocalArtifactStore`: a folder on disk, the offline default. Safe for concurrent
  writers (Hydra sweep jobs): versions are published with an atomic ``rename`` and aliases
  with an atomic ``replace``, both under a per-artifact file lock.
* :class:`WandbArtifactStore`: the real W&B SDK (``log_artifact``, ``use_artifact``, aliases),
  for online runs.

References look like W&B's: ``name``, ``name:latest``, ``name:v3`` or ``name:prod``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock, Timeout

from inference.errors import TagserveError
from inference.files import flush_folder, move_folder_into_place, write_atomically

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION_RE = re.compile(r"^v(\d+)$")
MANIFEST = "manifest.json"
# Where log_artifact copies a version before publishing it with one rename.
STAGING_PREFIX = ".staging-"


class ArtifactError(TagserveError):
    """A bad reference, a missing file, or anything else the store cannot do."""


class ArtifactNotFound(ArtifactError):
    """The reference names no artifact version in the store."""


@dataclass(frozen=True)
class ArtifactRef:
    """A parsed reference ``name[:version-or-alias]`` (``latest`` when omitted)."""

    name: str
    selector: str = "latest"

    @classmethod
    def parse(cls, ref: str) -> ArtifactRef:
        name, _, selector = ref.partition(":")
        selector = selector or "latest"
        if not _NAME_RE.match(name) or not _NAME_RE.match(selector):
            raise ArtifactError(f"bad artifact reference {ref!r}: expected name[:vN|alias]")
        return cls(name, selector)

    @property
    def is_version(self) -> bool:
        return bool(_VERSION_RE.match(self.selector))

    def __str__(self) -> str:
        return f"{self.name}:{self.selector}"


@dataclass(frozen=True)
class ArtifactVersion:
    """One immutable version of an artifact, with its files at ``path`` on local disk."""

    name: str
    version: str
    type: str
    digest: str
    metadata: dict[str, Any]
    path: Path
    aliases: tuple[str, ...] = ()
    created_by: str | None = None
    created_at: str = ""

    @property
    def qualified_name(self) -> str:
        return f"{self.name}:{self.version}"

    def file(self) -> Path:
        """The single file of a one-file artifact (data sets are logged as one file)."""
        files = [p for p in self.path.iterdir() if p.is_file()]
        if len(files) != 1:
            raise ArtifactError(f"{self.qualified_name} holds {len(files)} files, expected one")
        return files[0]


class ArtifactStore(Protocol):
    """What the pipeline needs from an artifact store."""

    def log_artifact(
        self,
        path: Path,
        name: str,
        type: str,
        metadata: dict[str, Any] | None = None,
        aliases: tuple[str, ...] = (),
        run_id: str | None = None,
    ) -> ArtifactVersion: ...

    def use(self, ref: str, run_id: str | None = None) -> ArtifactVersion: ...

    def get(self, ref: str) -> ArtifactVersion: ...

    def set_alias(self, ref: str, alias: str) -> ArtifactVersion: ...

    def update_metadata(self, ref: str, metadata: dict[str, Any]) -> ArtifactVersion: ...

    def promote(
        self,
        ref: str,
        alias: str,
        accept: Callable[[ArtifactVersion, ArtifactVersion | None], bool],
    ) -> bool: ...


def directory_digest(path: Path) -> str:
    """Content digest of a file or a folder: sha256 over sorted (relative path, file sha256)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    outer = hashlib.sha256()
    for file in files:
        rel = file.name if path.is_file() else file.relative_to(path).as_posix()
        outer.update(f"{rel}\0{file_sha256(file)}\n".encode())
    return outer.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of one file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class _Manifest:
    name: str
    version: str
    type: str
    digest: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created_by: str | None = None
    created_at: str = ""


class LocalArtifactStore:
    """W&B-like artifact store in a folder.

    Layout::

        <root>/<name>/v<N>/manifest.json   immutable version record
        <root>/<name>/v<N>/files/...       the artifact's files (read-only)
        <root>/<name>/aliases/<alias>      text file holding "vN", replaced atomically
        <root>/lineage.jsonl               one line per produced/used event
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- writing -------------------------------------------------------------------------

    def log_artifact(
        self,
        path: Path,
        name: str,
        type: str,
        metadata: dict[str, Any] | None = None,
        aliases: tuple[str, ...] = (),
        run_id: str | None = None,
    ) -> ArtifactVersion:
        """Publish ``path`` (a file or a folder) as the next version of ``name``.

        Content identical to an existing version is not stored twice: as in W&B, that
        version is returned and gets the aliases (``latest`` always moves to it).
        """
        ArtifactRef.parse(name)
        path = Path(path)
        if not path.exists():
            raise ArtifactError(f"cannot log {name}: {path} does not exist")
        digest = directory_digest(path)
        artifact_dir = self.root / name
        artifact_dir.mkdir(parents=True, exist_ok=True)
        # Copy outside the lock (it is the slow part) into a staging folder on the same
        # file system, so that publishing is a single atomic rename.
        _remove_stale_staging(artifact_dir)
        staging = artifact_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        # Held while this run copies: the next writer removes only folders whose lock no live
        # process holds (the kernel releases it when a killed run dies).
        staging_lock = FileLock(f"{staging}.lock")
        staging_lock.acquire(timeout=0)
        try:
            files = staging / "files"
            if path.is_dir():
                shutil.copytree(path, files)
            else:
                files.mkdir(parents=True)
                shutil.copy2(path, files / path.name)
            with self._lock(name):
                existing = self._find_digest(name, digest)
                if existing is None:
                    version = f"v{self._next_version(name)}"
                    manifest = _Manifest(
                        name, version, type, digest, dict(metadata or {}), run_id, _now()
                    )
                    text = json.dumps(asdict(manifest), indent=2)
                    write_atomically(staging / MANIFEST, lambda out: out.write(text.encode()))
                    _make_read_only(files)
                    move_folder_into_place(staging, artifact_dir / version)
                else:
                    version = existing
                for alias in ("latest", *aliases):
                    self._write_alias(name, alias, version)
        finally:
            if staging.exists():
                shutil.rmtree(staging)  # read-only files go too: the folder is writable
            _release(staging_lock)
        self._record(run_id, "produced", f"{name}:{version}")
        return self.get(f"{name}:{version}")

    def set_alias(self, ref: str, alias: str) -> ArtifactVersion:
        """Point ``alias`` at the version ``ref`` resolves to (atomically)."""
        parsed = ArtifactRef.parse(ref)
        ArtifactRef.parse(f"{parsed.name}:{alias}")
        with self._lock(parsed.name):
            version = self._resolve(parsed)
            self._write_alias(parsed.name, alias, version)
        return self.get(f"{parsed.name}:{version}")

    def update_metadata(self, ref: str, metadata: dict[str, Any]) -> ArtifactVersion:
        """Merge ``metadata`` into a version's metadata (its files stay immutable)."""
        parsed = ArtifactRef.parse(ref)
        with self._lock(parsed.name):
            version_dir = self.root / parsed.name / self._resolve(parsed)
            manifest = _read_manifest(version_dir / MANIFEST)
            manifest["metadata"].update(metadata)
            text = json.dumps(manifest, indent=2)
            write_atomically(version_dir / MANIFEST, lambda out: out.write(text.encode()))
        return self.get(ref)

    def promote(
        self,
        ref: str,
        alias: str,
        accept: Callable[[ArtifactVersion, ArtifactVersion | None], bool],
    ) -> bool:
        """Move ``alias`` to ``ref`` if ``accept(candidate, current)`` says so.

        Compare and set happen under the artifact's lock, so two sweep jobs promoting at
        once cannot both win against a stale ``current``.
        """
        parsed = ArtifactRef.parse(ref)
        with self._lock(parsed.name):
            candidate = self._load(parsed.name, self._resolve(parsed))
            try:
                current = self._load(parsed.name, self._resolve(ArtifactRef(parsed.name, alias)))
            except ArtifactNotFound:
                current = None
            if not accept(candidate, current):
                return False
            self._write_alias(parsed.name, alias, candidate.version)
            return True

    # -- reading -------------------------------------------------------------------------

    def get(self, ref: str) -> ArtifactVersion:
        """Resolve ``ref`` to a version (raises :class:`ArtifactNotFound`)."""
        parsed = ArtifactRef.parse(ref)
        return self._load(parsed.name, self._resolve(parsed))

    def use(self, ref: str, run_id: str | None = None) -> ArtifactVersion:
        """Resolve ``ref`` and record that ``run_id`` used it."""
        version = self.get(ref)
        self._record(run_id, "used", version.qualified_name)
        return version

    def versions(self, name: str) -> list[ArtifactVersion]:
        """All versions of ``name``, oldest first."""
        return [self._load(name, f"v{n}") for n in self._version_numbers(name)]

    def exists(self, ref: str) -> bool:
        try:
            self.get(ref)
        except ArtifactNotFound:
            return False
        return True

    def lineage(self) -> list[dict[str, Any]]:
        """Every produced/used event, in order."""
        log = self.root / "lineage.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    # -- internals -----------------------------------------------------------------------

    def _lock(self, name: str) -> FileLock:
        return FileLock(str(self.root / name / ".lock"), timeout=120)

    def _version_numbers(self, name: str) -> list[int]:
        artifact_dir = self.root / name
        if not artifact_dir.is_dir():
            return []
        numbers = (_VERSION_RE.match(p.name) for p in artifact_dir.iterdir())
        return sorted(int(m.group(1)) for m in numbers if m)

    def _next_version(self, name: str) -> int:
        numbers = self._version_numbers(name)
        return numbers[-1] + 1 if numbers else 0

    def _find_digest(self, name: str, digest: str) -> str | None:
        for number in self._version_numbers(name):
            manifest = _read_manifest(self.root / name / f"v{number}" / MANIFEST)
            if manifest["digest"] == digest:
                return manifest["version"]
        return None

    def _resolve(self, ref: ArtifactRef) -> str:
        if ref.is_version:
            if not (self.root / ref.name / ref.selector / MANIFEST).exists():
                raise ArtifactNotFound(f"artifact {ref} not found in {self.root}")
            return ref.selector
        alias_file = self.root / ref.name / "aliases" / ref.selector
        if not alias_file.exists():
            raise ArtifactNotFound(f"artifact {ref} not found in {self.root}")
        return alias_file.read_text().strip()

    def _aliases_of(self, name: str, version: str) -> tuple[str, ...]:
        alias_dir = self.root / name / "aliases"
        if not alias_dir.is_dir():
            return ()
        return tuple(
            sorted(
                p.name
                for p in alias_dir.iterdir()
                # `.<alias>.<hex>`: a temporary file a killed alias write left, no alias
                if not p.name.startswith(".") and p.read_text().strip() == version
            )
        )

    def _load(self, name: str, version: str) -> ArtifactVersion:
        version_dir = self.root / name / version
        if not (version_dir / MANIFEST).is_file():
            raise ArtifactNotFound(f"artifact {name}:{version} not found in {self.root}")
        manifest = _read_manifest(version_dir / MANIFEST)
        return ArtifactVersion(
            name=manifest["name"],
            version=manifest["version"],
            type=manifest["type"],
            digest=manifest["digest"],
            metadata=manifest["metadata"],
            path=version_dir / "files",
            aliases=self._aliases_of(name, version),
            created_by=manifest.get("created_by"),
            created_at=manifest.get("created_at", ""),
        )

    def _write_alias(self, name: str, alias: str, version: str) -> None:
        alias_dir = self.root / name / "aliases"
        if not alias_dir.is_dir():
            alias_dir.mkdir(parents=True, exist_ok=True)
            flush_folder(alias_dir.parent)
        write_atomically(alias_dir / alias, lambda out: out.write(f"{version}\n".encode()))

    def _record(self, run_id: str | None, event: str, qualified_name: str) -> None:
        line = json.dumps({"run": run_id, "event": event, "artifact": qualified_name})
        lock = FileLock(str(self.root / ".lineage.lock"), timeout=120)
        log = self.root / "lineage.jsonl"
        with lock:
            created = not log.exists()
            with open(log, "a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
            if created:
                flush_folder(self.root)


class WandbArtifactStore:
    """The same interface on W&B, through the real SDK (needs an online run)."""

    def __init__(self, run: Any, download_root: Path | str):
        self.run = run
        self.download_root = Path(download_root)

    def _api_artifact(self, ref: str) -> Any:
        import wandb

        parsed = ArtifactRef.parse(ref)
        try:
            return wandb.Api().artifact(f"{self.run.entity}/{self.run.project}/{parsed}")
        except Exception as exc:  # the SDK raises several types for "not found"
            raise ArtifactNotFound(f"artifact {parsed} not found on W&B: {exc}") from exc

    def _version(self, artifact: Any) -> ArtifactVersion:
        root = self.download_root / artifact.name.replace(":", "-")
        path = Path(artifact.download(root=str(root)))
        return ArtifactVersion(
            name=artifact.name.split(":")[0],
            version=artifact.version,
            type=artifact.type,
            digest=artifact.digest,
            metadata=dict(artifact.metadata),
            path=path,
            aliases=tuple(artifact.aliases),
        )

    def log_artifact(
        self,
        path: Path,
        name: str,
        type: str,
        metadata: dict[str, Any] | None = None,
        aliases: tuple[str, ...] = (),
        run_id: str | None = None,
    ) -> ArtifactVersion:
        import wandb

        artifact = wandb.Artifact(name, type=type, metadata=dict(metadata or {}))
        path = Path(path)
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        logged = self.run.log_artifact(artifact, aliases=["latest", *aliases])
        logged.wait()  # version and digest exist once the server has committed it
        return ArtifactVersion(
            name=name,
            version=logged.version,
            type=type,
            digest=logged.digest,
            metadata=dict(metadata or {}),
            path=path,
            aliases=("latest", *aliases),
        )

    def use(self, ref: str, run_id: str | None = None) -> ArtifactVersion:
        try:
            artifact = self.run.use_artifact(str(ArtifactRef.parse(ref)))
        except Exception as exc:
            raise ArtifactNotFound(f"artifact {ref} not found on W&B: {exc}") from exc
        return self._version(artifact)

    def get(self, ref: str) -> ArtifactVersion:
        return self._version(self._api_artifact(ref))

    def set_alias(self, ref: str, alias: str) -> ArtifactVersion:
        artifact = self._api_artifact(ref)
        if alias not in artifact.aliases:
            artifact.aliases.append(alias)
            artifact.save()
        return self._version(artifact)

    def update_metadata(self, ref: str, metadata: dict[str, Any]) -> ArtifactVersion:
        artifact = self._api_artifact(ref)
        artifact.metadata.update(metadata)
        artifact.save()
        return self._version(artifact)

    def promote(
        self,
        ref: str,
        alias: str,
        accept: Callable[[ArtifactVersion, ArtifactVersion | None], bool],
    ) -> bool:
        # W&B offers no compare-and-set on aliases: this is check-then-act.
        candidate = self.get(ref)
        try:
            current = self.get(f"{candidate.name}:{alias}")
        except ArtifactNotFound:
            current = None
        if not accept(candidate, current):
            return False
        self.set_alias(candidate.qualified_name, alias)
        return True


def _read_manifest(path: Path) -> dict[str, Any]:
    """A version's manifest.

    Raises:
        ArtifactError: It is empty, not JSON or not a record (a damaged store), naming it.
    """
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise ArtifactError(f"corrupt manifest {path}: {exc}") from None
    if not isinstance(manifest, dict) or not {"name", "version", "digest"} <= set(manifest):
        raise ArtifactError(f"corrupt manifest {path}: not an artifact version record")
    return manifest


def _remove_stale_staging(artifact_dir: Path) -> None:
    """Remove the staging folders of killed writers: those whose lock no process holds."""
    for staging in artifact_dir.glob(f"{STAGING_PREFIX}*"):
        if staging.suffix == ".lock":
            staging = staging.with_suffix("")  # a lock whose folder is gone: remove it too
        elif not staging.is_dir():
            continue
        lock = FileLock(f"{staging}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # a live writer is copying into it
        try:
            if staging.is_dir():
                _force_rmtree(staging)
        finally:
            _release(lock)


def _release(lock: FileLock) -> None:
    lock.release()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock.lock_file)


def _force_rmtree(path: Path) -> None:
    def writable(func: Callable[..., Any], target: str, _exc_info: Any) -> None:
        # A killed copy may have left read-only folders.
        os.chmod(os.path.dirname(target), stat.S_IRWXU)
        func(target)

    shutil.rmtree(path, onerror=writable)


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` alone
    sets it, racing other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_read_only(path: Path) -> None:
    """Read-only for everyone the umask lets read: ``0o444 & ~umask`` (0444 under umask 022,
    0400 under 077), never wider than a file this process creates."""
    mode = (stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH) & ~current_umask()
    for file in path.rglob("*"):
        if file.is_file():
            file.chmod(mode)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
