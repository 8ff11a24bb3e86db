"""Pull the prod MLflow model into the BentoML model store: verified, idempotent, atomic,
with lineage.

Python API::

    from importers import import_model
    result = import_model()                      # model_export:prod of the local store
    result = import_model("wandb:team/tagserve-diamonds/model_export:prod")
    print(result.tag, result.created)

CLI: ``python -m importers [SOURCE] [--name N] [--home DIR] [--project P] [--json]``.
"""

from importers.core import (
    DEFAULT_MODEL_NAME,
    ImportResult,
    import_model,
    model_requirements,
    requirements_dir,
)
from importers.errors import ModelImportError, ModelRejected, SourceError
from inference.constants import DEFAULT_PROJECT

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_PROJECT",
    "ImportResult",
    "ModelImportError",
    "ModelRejected",
    "SourceError",
    "import_model",
    "model_requirements",
    "requirements_dir",
]
