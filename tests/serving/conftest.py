"""Fixtures of the service, release and container tests: the session's imported models."""

from __future__ import annotations

import pytest

from tests.helpers.service_models import (
    REGRESSOR_NAME,
    Models,
    bentoml_home,
    import_prod,
    shared_models,
)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return shared_models(tmp_path_factory.mktemp("service-models"))


@pytest.fixture(scope="module")
def home(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Models:
    """A BentoML home of this module's own (bentos are built into it), holding the session's
    regressor, imported again by the importer."""
    home = tmp_path_factory.mktemp("release-bentoml")
    with bentoml_home(home):
        tag = import_prod(REGRESSOR_NAME, home=models.tagserve_home, name=REGRESSOR_NAME)
    assert tag == models.regressor
    return Models(home, models.tagserve_home, models.regressor, models.classifier)
