"""``python -m release dev|build --candidate TAG``: the candidate travels in the bento (its
models and the ``candidate`` argument; served: test_release_serving.py); a candidate the
service would refuse is refused at build time, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.release_repos import make_repo, run_release
from tests.helpers.service_models import Models

pytestmark = pytest.mark.usefixtures("git_identity")


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
