"""Fixtures of the service, release and container tests: the session's imported models, and
a real ``bentoml serve`` of the regressor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.marks import starts_server
from tests.helpers.monitoring import MonitoredModel
from tests.helpers.release_repos import GIT_IDENTITY, git, make_repo, run_release
from tests.helpers.service_models import (
    PROJECT_ROOT,
    REGRESSOR_NAME,
    Models,
    bentoml_home,
    bentoml_server,
    fragile_model,
    import_prod,
    subprocess_env,
    train_and_log,
)


@pytest.fixture(scope="module")
def home(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Models:
    """A BentoML home of this module's own (bentos are built into it), holding the session's
    regressor, imported again by the importer."""
    home = tmp_path_factory.mktemp("release-bentoml")
    with bentoml_home(home):
        tag = import_prod(REGRESSOR_NAME, home=models.tagserve_home, name=REGRESSOR_NAME)
    assert tag == models.regressor
    return Models(home, models.tagserve_home, models.regressor, models.classifier)


@pytest.fixture(scope="session")
@starts_server
def server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``bentoml serve service:Tagserve`` of the session's regressor on 127.0.0.1: its URL."""
    log = tmp_path_factory.mktemp("server") / "bentoml-serve.log"
    env = subprocess_env(models, TAGSERVE_MODEL=models.regressor)
    with bentoml_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as url:
        yield url


@pytest.fixture(scope="session")
def fragile(models: Models) -> str:
    """The BentoML tag of a regressor that raises on a value every input bound takes
    (``tests.helpers.service_models.fragile_model``)."""
    return fragile_model(models)


@pytest.fixture(scope="session")
@starts_server
def fragile_server(
    models: Models, fragile: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``bentoml serve service:Tagserve`` of the fragile regressor on 127.0.0.1: its URL."""
    log = tmp_path_factory.mktemp("fragile-server") / "bentoml-serve.log"
    env = subprocess_env(models, TAGSERVE_MODEL=fragile)
    with bentoml_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as url:
        yield url


@pytest.fixture(scope="session")
def shaped(models: Models) -> dict[str, str]:
    """The BentoML tag of a tiny model of each generated data shape
    (``tests.helpers.shapes.SHAPES``), trained as the pipeline trains and imported by the
    importer into the session's BentoML home; and the shipped penguins classifier."""
    from tests.helpers.service_models import log_trained
    from tests.helpers.shapes import SHAPES

    tags = {}
    for key, make in SHAPES.items():
        shape = make()
        log_trained(
            models.tagserve_home,
            shape.name,
            shape.frame,
            shape.target,
            shape.features,
            classifier=shape.classifier,
            stratify=shape.stratify,
        )
        with bentoml_home(models.bentoml_home):
            tags[key] = import_prod(shape.name, home=models.tagserve_home, name=shape.name)
    tags["penguins"] = models.classifier
    return tags


@pytest.fixture(scope="module")
def candidate_rows() -> list[dict[str, Any]]:
    """40 diamonds as JSON records of the regressor's features."""
    from tests.helpers.service_models import diamond_records

    return diamond_records(40)


@pytest.fixture(scope="module")
def both(
    models: Models, candidate: str, candidate_rows: list[dict[str, Any]]
) -> dict[str, list[float]]:
    """The live model's and the candidate's predictions of ``candidate_rows``, in-process."""
    from tests.helpers.candidates import loaded

    return {
        tag: [a["prediction"] for a in loaded(models, model).predict_records(candidate_rows)]
        for tag, model in (("live", models.regressor), ("candidate", candidate))
    }


# --- live monitoring (tests/serving/test_monitoring.py) ---------------------------------------

MONITOR_WINDOW = 1_000


@pytest.fixture(scope="session")
@starts_server
def monitored_server(monitored: MonitoredModel, tmp_path_factory: pytest.TempPathFactory):
    """``bentoml serve`` of the monitored model with 2 workers, testing a window of 1,000
    rows every second: its URL. Values outside the model's domain are accepted (served and
    counted by monitoring): the tests send a category the model never learnt and scaled
    sizes, to see monitoring flag them."""
    log = tmp_path_factory.mktemp("monitored-server") / "bentoml-serve.log"
    env = subprocess_env(
        monitored,  # type: ignore[arg-type]  (the homes are all it reads)
        TAGSERVE_MODEL=monitored.tag,
        TAGSERVE_WORKERS="2",
        TAGSERVE_MONITOR_EVERY="1",
        TAGSERVE_MONITOR_WINDOW=str(MONITOR_WINDOW),
        TAGSERVE_MONITOR_MIN_ROWS="200",
        TAGSERVE_UNKNOWN_CATEGORIES="accept",
        TAGSERVE_OUT_OF_RANGE="accept",
    )
    with bentoml_server("service:Tagserve", env=env, cwd=PROJECT_ROOT, log=log) as url:
        yield url


@pytest.fixture
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """A git author and committer for the release tests' commits and tags."""
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)


# --- releases (tests/serving/test_release*.py) ---------------------------------------------------


@pytest.fixture(scope="module")
def released(home: Models, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``python -m release build`` in a repository tagged v1.2.3."""
    repo = make_repo(tmp_path_factory.mktemp("released") / "repo", tag="v1.2.3")
    done = run_release(repo, home, "build")
    assert done.returncode == 0, done.stderr
    return {"repo": repo, "commit": git(repo, "rev-parse", "HEAD"), "out": done.stdout}


@pytest.fixture(scope="session")
def rolled_back(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Import v0 and v1 as prod, roll the artifact store's prod back to v0 and import again
    ("already imported"): v1 is the newest import, v0 the prod model."""
    from artifacts.store import LocalArtifactStore

    root = tmp_path_factory.mktemp("rollback")
    tagserve_home, home = root / "tagserve", root / "bentoml"
    tags = []
    with bentoml_home(home):
        for seed in (0, 3):
            train_and_log(tagserve_home, REGRESSOR_NAME, classifier=False, seed=seed)
            tags.append(import_prod(REGRESSOR_NAME, home=tagserve_home, name=REGRESSOR_NAME))
        store = LocalArtifactStore(tagserve_home / "store" / REGRESSOR_NAME)
        store.set_alias("model_export:v0", "prod")
        assert import_prod(REGRESSOR_NAME, home=tagserve_home, name=REGRESSOR_NAME) == tags[0]
    return {"models": Models(home, tagserve_home, tags[0], ""), "prod": tags[0], "newer": tags[1]}


@pytest.fixture(scope="module")
def home_candidate(home: Models, candidate: str) -> str:
    """The session's candidate, imported into this module's BentoML home too."""
    from tests.helpers.candidates import import_candidate

    tag = import_candidate(home, train=False)
    assert tag == candidate
    return tag
