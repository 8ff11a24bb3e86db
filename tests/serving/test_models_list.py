"""`python -m release models` (`make models`): every model of the store with its exact tag (whole,
as TAGSERVE_MODEL and TAGSERVE_CANDIDATE need it), the stage label, the exact artifact version
and the lineage the importer recorded."""

from __future__ import annotations

import json
import subprocess

from tests.helpers.service_models import (
    CLASSIFIER_NAME,
    PROJECT_ROOT,
    PYTHON,
    REGRESSOR_NAME,
    Models,
    subprocess_env,
)


def release_models(models: Models, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "release", "models", *args],
        cwd=PROJECT_ROOT,
        env=subprocess_env(models),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_models_lists_exact_tags_stage_artifact_and_lineage(models: Models):
    done = release_models(models, "--json")
    assert done.returncode == 0, done.stderr
    listed = {line["tag"]: line for line in json.loads(done.stdout)}
    for tag, project in ((models.regressor, REGRESSOR_NAME), (models.classifier, CLASSIFIER_NAME)):
        line = listed[tag]
        assert line["stage"] == "prod"
        # tests.helpers.service_models.log_trained's run, commit and lineage
        assert line["run"] == f"test-{project}-0"
        assert line["commit"] == "0" * 12
        assert line["data"] == "raw_data:v0"
        assert line["artifact"].startswith(f"local:{project}/model_export:v")
        assert not line["artifact"].endswith(":prod")  # the exact version, not the alias


def test_models_table_shows_whole_tags_under_a_header(models: Models):
    done = release_models(models, REGRESSOR_NAME)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["tag", "stage", "artifact", "run", "commit", "data", "created"]
    tags = [row.split()[0] for row in rows]
    assert models.regressor in tags
    assert all(tag.startswith(f"{REGRESSOR_NAME}:") for tag in tags)  # only that name


def test_models_of_an_unknown_name_says_so(models: Models):
    done = release_models(models, "no-such-model")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "no model 'no-such-model' in the BentoML store: import one (`python -m importers`)\n"
    )
