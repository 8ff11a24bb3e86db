"""The local artifact store: versions, aliases, metadata, lineage and concurrent writers."""

from __future__ import annotations

import multiprocessing
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
