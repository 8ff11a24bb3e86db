"""Fixtures of the core tests: one real exported model, and hostile copies of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.hostile_models import (
    EVIL_MODULE,
    EVIL_SOURCE,
    with_code_folder,
    with_foreign_type,
)
from tests.helpers.importer_models import train_export, writable_copy
from tests.helpers.shipped_models import Shipped, train_shipped


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small diamonds regressor, exported as the pipeline exports it."""
    return train_export(tmp_path_factory.mktemp("core") / "model")


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the hostile module writes when anything imports it."""
    path = tmp_path / "evil-ran"
    monkeypatch.setenv("TAGSERVE_TEST_MARKER", str(path))
    return path


@pytest.fixture
def evil_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding the hostile module, on PYTHONPATH and sys.path: were the type ever
    resolved, it would import (and write the marker)."""
    folder = tmp_path / "site"
    folder.mkdir()
    shutil.copy(EVIL_SOURCE, folder / f"{EVIL_MODULE}.py")
    monkeypatch.syspath_prepend(str(folder))
    return folder


@pytest.fixture
def code_model(exported: Path, tmp_path: Path) -> Path:
    return with_code_folder(writable_copy(exported, tmp_path / "code-model"))


@pytest.fixture
def foreign_type_model(exported: Path, tmp_path: Path) -> Path:
    return with_foreign_type(writable_copy(exported, tmp_path / "foreign-model"))


@pytest.fixture(scope="module", params=["diamonds", "penguins"])
def shipped(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Shipped:
    """The model ``python -m pipeline`` (diamonds) or ``python -m pipeline
    experiment=penguins`` makes with the shipped config and data, trained for real, with the
    test split and input example the pipeline stored for it."""
    return train_shipped(request.param, tmp_path_factory.mktemp(f"shipped-{request.param}"))
