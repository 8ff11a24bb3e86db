"""A development bento that carries a candidate, served by a real ``bentoml serve``: its service
shadows the candidate. (Its own module: the BentoML home of test_release_serving.py gets a newer
prod model.)"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers.candidates import metric
from tests.helpers.release_repos import bento_dir, git, make_repo, run_release
from tests.helpers.service_models import (
    Models,
    bentoml_server,
    records,
    subprocess_env,
)

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("git_identity")]


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
