"""Shared fixtures (the real Hydra config, composed and shrunk for tests; the session's models)
and the ``server`` mark of the tests the fast loop leaves out (``tests.helpers.marks``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tests.helpers import marks
from tests.helpers.client_models import build_client_model
from tests.helpers.project import CONFIG_DIR, SMALL_FOREST, VENV_BIN
from tests.helpers.service_models import Models, build_models


# tryfirst: before pytest's own hook deselects by `-m`, which must see these marks.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``server`` every test that uses a fixture starting a server."""
    for item in items:
        if item.get_closest_marker(marks.SERVER) is None and marks.uses_server_fixture(item):
            item.add_marker(marks.SERVER)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Name the running test for ``marks.assert_server_marked`` (its fixtures' setup too)."""
    marks.current = item
    try:
        return (yield)
    finally:
        marks.current = None


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose the real pipeline config with a temp home, a small forest and extra overrides."""

    def _make(*overrides: str, home: Path | None = None, tracking: str = "disabled") -> DictConfig:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return compose(
                "config",
                overrides=[
                    f"main.home={home or tmp_path / 'home'}",
                    f"tracking={tracking}",
                    *SMALL_FOREST,
                    *overrides,
                ],
            )

    return _make


@pytest.fixture
def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: the project's venv first, a temp home, quiet W&B."""
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        TAGSERVE_HOME=str(tmp_path / "home"),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    return env


@pytest.fixture
def diamonds_rows() -> pd.DataFrame:
    """Three diamonds with every feature kind the default config uses."""
    return pd.DataFrame(
        {
            "carat": [0.23, 0.31, 1.5],
            "cut": ["Ideal", "Good", "Premium"],
            "color": ["E", "J", "G"],
            "clarity": ["SI2", "VS1", "IF"],
            "depth": [61.5, 63.3, 60.1],
            "table": [55.0, 58.0, 57.0],
            "price": [326, 335, 9000],
            "x": [3.95, 4.34, 7.3],
            "y": [3.98, 4.35, 7.25],
            "z": [2.43, 2.75, 4.4],
        }
    )


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    """The session's served models: a regressor and a classifier trained as the pipeline
    trains (tiny forests on the shipped data), imported into a BentoML home of their own."""
    return build_models(tmp_path_factory.mktemp("service-models"))


@pytest.fixture(scope="session")
def client_model(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The clients' model: trained, exported and imported once per session
    (``{"model_dir", "env", "tag"}``; copy ``env`` before changing it)."""
    return build_client_model(tmp_path_factory.mktemp("client-model"))


@pytest.fixture(scope="session")
def monitored(tmp_path_factory: pytest.TempPathFactory):
    """A diamonds regressor imported with its drift reference (``tests.helpers.monitoring``),
    for the importer, service and client tests of the live monitoring."""
    from tests.helpers.monitoring import monitored_model

    root = tmp_path_factory.mktemp("monitored")
    return monitored_model(root / "tagserve", root / "bentoml")


@pytest.fixture(scope="session")
def candidate(models: Models) -> str:
    """The BentoML tag of a candidate regressor beside the session's (another seed, imported
    non-prod): ``tests.helpers.candidates.import_candidate``."""
    from tests.helpers.candidates import import_candidate

    return import_candidate(models)


@pytest.fixture(scope="session")
def classifier_candidate(models: Models) -> str:
    """The BentoML tag of a candidate penguins classifier beside the session's (another
    seed, imported non-prod)."""
    from tests.helpers.candidates import import_candidate

    return import_candidate(models, classifier=True)
