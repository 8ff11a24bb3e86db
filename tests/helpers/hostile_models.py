"""Hostile copies of an exported model, as an attacker would shape them: a model that ships
code, and one whose skops file holds a type of its own (``evil.Boom``), listed as trusted by
its MLmodel. Importing ``evil`` writes a marker file (``evil_source.py``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from sklearn.base import BaseEstimator, TransformerMixin

EVIL_MODULE = "evil"
EVIL_SOURCE = Path(__file__).with_name("evil_source.py")


def _edit_mlmodel(folder: Path, edit) -> None:
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    edit(mlmodel)
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))


def _trust_evil(mlmodel: dict) -> None:
    sklearn = mlmodel["flavors"]["sklearn"]
    sklearn["skops_trusted_types"] = [*sklearn.get("skops_trusted_types", []), "evil.Boom"]


def with_code_folder(folder: Path) -> Path:
    """``folder`` with ``code/evil.py`` and an MLmodel naming it (MLflow's ``code_paths``)."""
    (folder / "code").mkdir()
    shutil.copy(EVIL_SOURCE, folder / "code" / f"{EVIL_MODULE}.py")

    def edit(mlmodel: dict) -> None:
        mlmodel["flavors"]["python_function"]["code"] = "code"
        _trust_evil(mlmodel)

    _edit_mlmodel(folder, edit)
    return folder


class _Boom(BaseEstimator, TransformerMixin):
    """Stands in for ``evil.Boom`` when the skops file is written (nothing imports evil)."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


_Boom.__module__, _Boom.__name__, _Boom.__qualname__ = EVIL_MODULE, "Boom", "Boom"


def with_foreign_type(folder: Path) -> Path:
    """``folder`` whose model.skops holds an ``evil.Boom`` step, trusted by its MLmodel."""
    import skops.io
    from sklearn.pipeline import Pipeline

    from inference.loading import load_pipeline

    model = load_pipeline(folder)
    hostile = Pipeline([("boom", _Boom()), *model.steps])
    (folder / "model.skops").write_bytes(skops.io.dumps(hostile))
    _edit_mlmodel(folder, _trust_evil)
    return folder
