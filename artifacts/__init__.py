"""Artifact stores with W&B semantics (versions, aliases, digests, lineage): the pipeline
writes its artifacts through them and the importer reads the ``prod`` model from them."""

from artifacts.store import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactRef,
    ArtifactStore,
    ArtifactVersion,
    LocalArtifactStore,
    WandbArtifactStore,
    directory_digest,
    file_sha256,
)

__all__ = [
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactRef",
    "ArtifactStore",
    "ArtifactVersion",
    "LocalArtifactStore",
    "WandbArtifactStore",
    "directory_digest",
    "file_sha256",
]
