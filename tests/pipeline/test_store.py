"""The local artifact store: versions, aliases, metadata, lineage and concurrent writers."""

from __future__ import annotations

import multiprocessing
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from artifacts.store import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactRef,
    LocalArtifactStore,
    directory_digest,
)


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_ref_parsing():
    assert ArtifactRef.parse("raw_data") == ArtifactRef("raw_data", "latest")
    assert ArtifactRef.parse("model_export:v3").is_version
    assert not ArtifactRef.parse("model_export:prod").is_version
    with pytest.raises(ArtifactError, match="bad artifact reference"):
        ArtifactRef.parse("bad name:/x")


def test_versions_are_numbered_and_immutable(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    v0 = store.log_artifact(_file(tmp_path, "a.csv", "x\n1\n"), "raw_data", "raw_data", {"rows": 1})
    v1 = store.log_artifact(_file(tmp_path, "a.csv", "x\n2\n"), "raw_data", "raw_data", {"rows": 1})
    assert (v0.version, v1.version) == ("v0", "v1")
    assert store.get("raw_data:latest").version == "v1"
    assert store.get("raw_data:v0").file().read_text() == "x\n1\n"
    # Published files are read-only (mode bits: root could still write, so check them).
    assert store.get("raw_data:v0").file().stat().st_mode & 0o222 == 0
    assert v0.digest != v1.digest
    assert v0.digest == directory_digest(store.get("raw_data:v0").path)


def test_same_content_reuses_the_version_like_wandb(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    first = store.log_artifact(_file(tmp_path, "a.csv", "same"), "raw_data", "raw_data")
    store.log_artifact(_file(tmp_path, "b.csv", "other"), "raw_data", "raw_data")
    again = store.log_artifact(_file(tmp_path, "a.csv", "same"), "raw_data", "raw_data")
    assert again.version == first.version == "v0"
    assert [v.version for v in store.versions("raw_data")] == ["v0", "v1"]
    assert store.get("raw_data:latest").version == "v0"  # latest follows the re-log


def test_aliases_move_and_unknown_refs_fail(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    for text in ("a", "b"):
        store.log_artifact(_file(tmp_path, "f.txt", text), "model_export", "model_export")
    store.set_alias("model_export:v0", "prod")
    assert store.get("model_export:prod").version == "v0"
    assert store.get("model_export:v0").aliases == ("prod",)
    store.set_alias("model_export:v1", "prod")
    assert store.get("model_export:prod").version == "v1"
    assert set(store.get("model_export:v1").aliases) == {"latest", "prod"}
    with pytest.raises(ArtifactNotFound, match="model_export:staging"):
        store.get("model_export:staging")
    with pytest.raises(ArtifactNotFound):
        store.get("model_export:v7")
    with pytest.raises(ArtifactNotFound):
        store.set_alias("nothing:v0", "prod")


def test_promote_is_compare_and_set(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    for text in ("a", "b"):
        store.log_artifact(_file(tmp_path, "f.txt", text), "m", "model_export")
    assert store.promote("m:v0", "prod", lambda cand, cur: cur is None)
    assert not store.promote("m:v1", "prod", lambda cand, cur: cur is None)
    assert store.get("m:prod").version == "v0"


def test_metadata_updates_keep_files(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    v0 = store.log_artifact(_file(tmp_path, "f.txt", "a"), "m", "model_export", {"val": 1})
    updated = store.update_metadata("m:v0", {"test": 2})
    assert updated.metadata == {"val": 1, "test": 2}
    assert updated.digest == v0.digest


def test_lineage_records_producers_and_users(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    store.log_artifact(_file(tmp_path, "f.txt", "a"), "raw_data", "raw_data", run_id="run-1")
    store.use("raw_data:latest", run_id="run-2")
    assert store.lineage() == [
        {"run": "run-1", "event": "produced", "artifact": "raw_data:v0"},
        {"run": "run-2", "event": "used", "artifact": "raw_data:v0"},
    ]
    assert store.get("raw_data:v0").created_by == "run-1"


def test_missing_source_is_a_clear_error(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    with pytest.raises(ArtifactError, match="does not exist"):
        store.log_artifact(tmp_path / "nope.csv", "raw_data", "raw_data")
    assert store.versions("raw_data") == []


def _writer(root: str, worker: int, count: int) -> None:
    store = LocalArtifactStore(root)
    scratch = Path(root).parent / f"scratch-{worker}"
    scratch.mkdir(exist_ok=True)
    for i in range(count):
        folder = scratch / f"model-{i}"
        folder.mkdir()
        (folder / "weights.bin").write_bytes(f"{worker}-{i}".encode() * 1000)
        store.log_artifact(folder, "model_export", "model_export", {"worker": worker, "i": i})
        store.set_alias("model_export:latest", f"worker{worker}")


def test_concurrent_writers_never_corrupt_the_store(tmp_path):
    root = tmp_path / "store"
    LocalArtifactStore(root)
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_writer, args=(str(root), w, 8)) for w in range(3)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    store = LocalArtifactStore(root)
    versions = store.versions("model_export")
    assert [v.version for v in versions] == [f"v{n}" for n in range(24)]
    assert len({v.digest for v in versions}) == 24
    assert sorted((v.metadata["worker"], v.metadata["i"]) for v in versions) == sorted(
        (w, i) for w in range(3) for i in range(8)
    )
    for version in versions:  # every published version is whole
        assert directory_digest(version.path) == version.digest
    assert not list((root / "model_export").glob(".staging-*"))
    for w in range(3):
        assert store.get(f"model_export:worker{w}").version in {v.version for v in versions}


# --- durability and leftovers of killed writers ------------------------------------------------


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``os.fsync`` is called on (the real fsync still runs)."""
    paths: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return paths


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names fds through /proc (Linux)")
def test_manifests_aliases_and_lineage_reach_the_disk(tmp_path, synced):
    """Every manifest, alias and lineage write is flushed, file and folder: a crash right after
    a write cannot leave an empty or missing record."""
    root = tmp_path / "store"
    store = LocalArtifactStore(root)
    store.log_artifact(_file(tmp_path, "a.csv", "x\n1\n"), "raw_data", "raw_data", run_id="r1")
    store.set_alias("raw_data:v0", "reference")
    store.update_metadata("raw_data:v0", {"rows": 1})
    version = root / "raw_data" / "v0"
    expected = [
        version / "manifest.json",
        version,
        root / "raw_data" / "aliases" / "latest",
        root / "raw_data" / "aliases" / "reference",
        root / "raw_data" / "aliases",
        root / "raw_data",
        root / "lineage.jsonl",
        root,
    ]
    for path in expected:
        # A replaced file is synced under its temporary name (`.<name>.<hex>`) before the
        # rename; the folder holding the rename is synced after it.
        assert str(path) in synced or any(
            Path(p).parent == path.parent and Path(p).name.startswith(f".{path.name}.")
            for p in synced
        ), path


def test_staging_folders_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    root = tmp_path / "store"
    store = LocalArtifactStore(root)
    store.log_artifact(_file(tmp_path, "a.csv", "x\n1\n"), "raw_data", "raw_data")
    # What a killed log_artifact leaves: a half-copied staging folder (read-only files).
    dead = root / "raw_data" / ".staging-0123456789abcdef"
    (dead / "files").mkdir(parents=True)
    _file(dead / "files", "a.csv", "x\n").chmod(0o444)
    orphan_lock = _file(root / "raw_data", ".staging-00aa.lock", "")
    # A live writer's staging folder (its lock held by another process) must survive.
    live = root / "raw_data" / ".staging-fedcba9876543210"
    (live / "files").mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, f"{live}.lock"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        store.log_artifact(_file(tmp_path, "a.csv", "x\n2\n"), "raw_data", "raw_data")
        assert not dead.exists() and not orphan_lock.exists() and live.is_dir()
    finally:
        holder.communicate("", timeout=30)
    assert [v.version for v in store.versions("raw_data")] == ["v0", "v1"]


HOLD_LOCK = """
import sys
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_temporary_alias_files_are_no_aliases(tmp_path):
    """A killed alias write leaves `.prod.<hex>`: it is not the alias `.prod.<hex>`."""
    root = tmp_path / "store"
    store = LocalArtifactStore(root)
    store.log_artifact(_file(tmp_path, "a.csv", "x\n1\n"), "raw_data", "raw_data")
    (root / "raw_data" / "aliases" / ".prod.0123abcd").write_text("v0\n")
    assert store.get("raw_data:v0").aliases == ("latest",)


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]"])
def test_an_empty_or_corrupt_manifest_names_the_file(tmp_path, content):
    root = tmp_path / "store"
    store = LocalArtifactStore(root)
    store.log_artifact(_file(tmp_path, "a.csv", "x\n1\n"), "raw_data", "raw_data")
    manifest = root / "raw_data" / "v0" / "manifest.json"
    manifest.write_text(content)
    for call in (
        lambda: store.get("raw_data:v0"),
        lambda: store.log_artifact(_file(tmp_path, "b.csv", "x\n2\n"), "raw_data", "raw_data"),
        lambda: store.update_metadata("raw_data:v0", {"rows": 1}),
    ):
        with pytest.raises(ArtifactError, match=rf"corrupt manifest {re.escape(str(manifest))}"):
            call()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027])
def test_read_only_files_respect_the_umask(tmp_path, umask):
    """Published files lose every write bit and keep no read bit the umask withholds."""
    old = os.umask(umask)
    try:
        store = LocalArtifactStore(tmp_path / "store")
        version = store.log_artifact(_file(tmp_path, "a.csv", "x\n1\n"), "raw_data", "raw_data")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(version.file().stat().st_mode)
    assert mode == 0o444 & ~umask, oct(mode)
