"""The start-up check of a candidate beside the live model: a hostile, inexact or mismatched
candidate is refused in one line, before anything is served."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from serving.candidates import CandidateRefused, check_candidate
from tests.helpers.candidates import (
    hostile_copy,
)
from tests.helpers.servers import BENTOML_CLI, free_port
from tests.helpers.service_models import (
    PROJECT_ROOT,
    Models,
    bentoml_home,
    subprocess_env,
)


def test_a_hostile_candidate_is_refused_at_start_up_in_one_line(
    home: Models, tmp_path: Path
) -> None:
    evil = hostile_copy(home.bentoml_home, home.regressor, "v9-evil")
    env = subprocess_env(home, TAGSERVE_MODEL=home.regressor, TAGSERVE_CANDIDATE=evil)
    cmd = [BENTOML_CLI, "serve", "service:Tagserve", "--host", "127.0.0.1"]
    cmd += ["--port", str(free_port())]
    done = subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    refusal = [line for line in lines if "TAGSERVE_CANDIDATE" in line]
    assert len(refusal) == 1, lines
    assert "ships code of its own" in refusal[0] and evil in refusal[0]
    assert not [line for line in lines if "Traceback" in line], lines


def test_an_inexact_or_mismatched_candidate_is_refused(models: Models, candidate: str) -> None:
    import bentoml

    from serving.loading import model_contract

    with bentoml_home(models.bentoml_home):
        live = model_contract(bentoml.models.get(models.regressor))
        classifier = bentoml.models.get(models.classifier)
        cases = {
            "tagserve-diamonds:latest": "exact tag",
            "tagserve-diamonds": "exact tag",
            "tagserve-diamonds:v7-000000000000": "no model",
            models.regressor: "the live model itself",
            str(classifier.tag): "is a classification model",
        }
        for tag, problem in cases.items():
            with pytest.raises(CandidateRefused, match=problem):
                check_candidate(tag, models.regressor, live, model_contract)
        # Another input contract: a column of another type.
        changed = model_contract(bentoml.models.get(models.regressor))
        changed.columns[0] = dataclasses.replace(changed.columns[0], type="long")
        with pytest.raises(CandidateRefused, match=rf"{changed.columns[0].name} \(long\) missing"):
            check_candidate(candidate, models.regressor, changed, model_contract)
        assert (
            str(check_candidate(candidate, models.regressor, live, model_contract).tag) == candidate
        )
