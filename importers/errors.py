"""Errors the importer reports to the user as one readable line (no traceback)."""

from __future__ import annotations

from inference.errors import ModelRefused, TagserveError


class ModelImportError(TagserveError):
    """An import failed; the message says what is wrong and, where possible, what to do."""


class SourceError(ModelImportError):
    """The source cannot be read: unknown artifact or alias, no store, no W&B access."""


class ModelRejected(ModelImportError, ModelRefused):
    """The model failed verification, so it did not enter the BentoML model store."""
