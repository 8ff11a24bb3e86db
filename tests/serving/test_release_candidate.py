"""``python -m release dev|build --candidate TAG``: the candidate travels in the bento (its
models and the ``candidate`` argument), so the bento's service shadows it where it is served;
a candidate the service would refuse is refused at build time, in one line."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers.candidates import import_candidate, metric
from tests.helpers.release_repos import GIT_IDENTITY, bento_dir, git, make_repo, run_release
from tests.helpers.service_models import Models, bentoml_server, records, subprocess_env


@pytest.fixture(autouse=True)
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def home_candidate(home: Models, candidate: str) -> str:
    """The session's candidate, imported into this module's BentoML home too."""
    tag = import_candidate(home, train=False)
    assert tag == candidate
    return tag


def test_a_dev_bento_carries_the_candidate_and_its_service_shadows_it(
    home: Models, home_candidate: str, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    commit = git(repo, "rev-parse", "HEAD")
    done = run_release(repo, home, "dev", "--candidate", home_candidate)
    assert done.returncode == 0, done.stderr
    tag = f"tagserve:dev-{commit[:12]}"
    assert done.stdout.startswith(f"built {tag} ") and f"candidate {home_candidate})" in done.stdout
    info = yaml.safe_load((bento_dir(home, tag) / "bento.yaml").read_text())
    assert [m["tag"] for m in info["models"]] == [home.regressor, home_candidate]
    assert info["args"]["model"] == home.regressor
    assert info["args"]["candidate"] == home_candidate
    assert info["labels"]["candidate_tag"] == home_candidate
    assert not info["version"].startswith("v")  # the version rules are unchanged

    env = subprocess_env(home, TAGSERVE_SHADOW_FRACTION="1")  # the bento names the models
    with bentoml_server(tag, env=env, cwd=tmp_path, log=tmp_path / "serve.log") as url:
        meta = httpx.get(f"{url}/metadata", timeout=30).json()
        assert (meta["model"], meta["candidate"]["model"]) == (home.regressor, home_candidate)
        record = records(home.example(home.regressor))[0]
        answer = httpx.post(f"{url}/predict", json=record, timeout=30)
        assert answer.headers["x-tagserve-model"] == home.regressor
        for _ in range(300):  # the shadow scores in the background
            if metric(url, "tagserve_shadow_requests_total") >= 1:
                break
            time.sleep(0.2)
        assert metric(url, "tagserve_shadow_requests_total") == 1


def test_a_candidate_the_service_would_refuse_is_refused_at_build(
    home: Models, home_candidate: str, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", tag="v3.0.0")
    for candidate, problem in (
        ("tagserve-diamonds:latest", "exact tag"),
        (home.regressor, "the live model itself"),
        ("tagserve-diamonds:v7-000000000000", "no model"),
    ):
        done = run_release(repo, home, "build", "--candidate", candidate)
        assert done.returncode == 1 and done.stdout == "", done.stdout
        assert done.stderr.startswith("error: --candidate ") and done.stderr.count("\n") == 1
        assert problem in done.stderr, done.stderr
    assert not (home.bentoml_home / "bentos" / "tagserve" / "v3.0.0").exists()
