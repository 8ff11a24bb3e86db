"""The W&B artifact backend, with only the W&B service faked.

No W&B server can run here, so the service behind `wandb.Api` and the run's artifact calls
is a small in-memory fake; the store code under test, `wandb.Artifact` and its manifest are
the real SDK.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import wandb

from artifacts.store import ArtifactNotFound, WandbArtifactStore
from pipeline.tracking import wants_wandb_store


class _ServerArtifact:
    """What the W&B service hands back for one artifact version."""

    def __init__(self, service, name, version, type, files, metadata):
        self._service, self.version, self.type = service, version, type
        self.name = f"{name}:{version}"
        self.metadata, self.aliases, self._files = dict(metadata), [], files
        self.digest = hashlib.md5(
            b"".join(f.read_bytes() for f in sorted(files.rglob("*")) if f.is_file())
        ).hexdigest()

    def download(self, root):
        shutil.copytree(self._files, root, dirs_exist_ok=True)
        return root

    def wait(self):
        return self

    def save(self):
        self._service.saves += 1


class _FakeService:
    def __init__(self, tmp_path: Path):
        self.tmp, self.artifacts, self.saves = tmp_path, {}, 0

    def commit(self, artifact: wandb.Artifact, aliases):
        versions = self.artifacts.setdefault(artifact.name, [])
        files = self.tmp / f"{artifact.name}-v{len(versions)}"
        files.mkdir()
        for path, entry in artifact.manifest.entries.items():
            shutil.copy(entry.local_path, files / path)
        logged = _ServerArtifact(
            self, artifact.name, f"v{len(versions)}", artifact.type, files, artifact.metadata
        )
        for other in versions:
            other.aliases = [a for a in other.aliases if a not in aliases]
        logged.aliases = list(aliases)
        versions.append(logged)
        return logged

    def resolve(self, path: str):
        name, _, selector = path.rsplit("/", 1)[-1].partition(":")
        for version in self.artifacts.get(name, []):
            if selector in (version.version, *version.aliases):
                return version
        raise wandb.errors.CommError(f"artifact '{path}' not found")


class _Run:
    entity, project = "team", "tagserve-diamonds"

    def __init__(self, service):
        self._service = service

    def log_artifact(self, artifact, aliases):
        return self._service.commit(artifact, aliases)

    def use_artifact(self, ref):
        return self._service.resolve(ref)


@pytest.fixture
def service(tmp_path, monkeypatch):
    fake = _FakeService(tmp_path)
    monkeypatch.setattr(
        wandb, "Api", lambda *a, **k: type("Api", (), {"artifact": lambda _, p: fake.resolve(p)})()
    )
    return fake


def test_wandb_store_logs_resolves_and_aliases(service, tmp_path):
    store = WandbArtifactStore(_Run(service), tmp_path / "downloads")
    source = tmp_path / "model"
    source.mkdir()
    (source / "MLmodel").write_text("flavors: {}\n")
    logged = store.log_artifact(
        source, "model_export", "model_export", {"val_metrics": {"r2": 0.9}}
    )
    assert logged.qualified_name == "model_export:v0" and logged.digest
    used = store.use("model_export:latest")
    assert (used.path / "MLmodel").read_text() == "flavors: {}\n"
    assert used.metadata == {"val_metrics": {"r2": 0.9}}
    store.update_metadata("model_export:v0", {"test_metrics": {"r2": 0.95}})
    assert store.promote("model_export:v0", "prod", lambda cand, cur: cur is None)
    prod = store.get("model_export:prod")
    assert prod.version == "v0" and "prod" in prod.aliases
    assert prod.metadata["test_metrics"] == {"r2": 0.95}
    with pytest.raises(ArtifactNotFound, match="model_export:staging"):
        store.get("model_export:staging")


def test_backend_is_chosen_by_config(make_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert not wants_wandb_store(make_cfg(tracking="offline"))
    assert wants_wandb_store(make_cfg(tracking="online"))
    assert not wants_wandb_store(make_cfg("tracking.store=local", tracking="online"))
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="needs tracking.mode=online"):
        wants_wandb_store(make_cfg("tracking.store=wandb", tracking="offline"))
