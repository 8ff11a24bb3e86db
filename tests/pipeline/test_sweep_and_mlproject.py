"""Hydra sweeps in parallel, and the pipeline as an MLflow project run from a git tag."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from artifacts.store import LocalArtifactStore
from tests.helpers.project import PROJECT_ROOT, SMALL_FOREST


@pytest.mark.slow
def test_parallel_sweep_jobs_each_log_their_own_model(subprocess_env, tmp_path):
    home = tmp_path / "home"
    overrides = ["tracking=disabled", *SMALL_FOREST]
    pipeline = [sys.executable, "-m", "pipeline"]
    subprocess.run(
        [*pipeline, *overrides, "main.steps=[download,preprocess,check_data,segregate]"],
        check=True,
        env=subprocess_env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        timeout=300,
    )
    sweep = subprocess.run(
        [
            *pipeline,
            "-m",
            *overrides,
            "main.steps=[train,evaluate]",
            "model.estimator.max_depth=3,6",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
        ],
        env=subprocess_env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sweep.returncode == 0, sweep.stderr
    store = LocalArtifactStore(home / "store" / "tagserve-diamonds")
    models = store.versions("model_export")
    depths = sorted(m.metadata["config"]["model"]["estimator"]["max_depth"] for m in models)
    assert depths == [3, 6]
    # Each job evaluated its own model (not whatever `latest` was when it got there).
    assert all("test_metrics" in m.metadata for m in models)
    assert store.get("model_export:prod").version in {m.version for m in models}
    assert sweep.stdout.count("evaluate: model_export:v") == 2


def _git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.slow
def test_mlflow_run_from_a_git_tag(subprocess_env, tmp_path):
    repo = tmp_path / "repo"
    # What a clone holds: the project's files (the pipeline imports the core and the store).
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = PROJECT_ROOT / name
        if source.is_file():  # deleted in the work tree but still tracked: not in a clone
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    _git("init", "-q", "-b", "main", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git(
        "-c",
        "user.email=ci@example.com",
        "-c",
        "user.name=ci",
        "commit",
        "-qm",
        "release",
        cwd=repo,
    )
    _git("tag", "0.1.0", cwd=repo)
    # Work after the tag that must not be what runs.
    (repo / "pipeline" / "conf" / "data" / "diamonds.yaml").write_text("broken: [\n")
    _git("-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qam", "wip", cwd=repo)
    home = tmp_path / "mlflow-home"
    env = {**subprocess_env, "TAGSERVE_HOME": str(home)}
    result = subprocess.run(
        [
            "mlflow",
            "run",
            f"file://{repo}#pipeline",
            "-v",
            "0.1.0",
            "--env-manager",
            "local",
            "-P",
            "steps=download,preprocess,check_data,segregate,train,evaluate",
            "-P",
            f"hydra_options=tracking=disabled {' '.join(SMALL_FOREST)}",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "evaluate: model_export:v0" in result.stdout
    prod = LocalArtifactStore(home / "store" / "tagserve-diamonds").get("model_export:prod")
    assert (
        prod.metadata["config"]["main"]["steps"]
        == "download,preprocess,check_data,segregate,train,evaluate"
    )


def test_mlproject_requirements_match_the_lock(tmp_path):
    # The project's own uv (a locked dependency, in this environment), never one from PATH.
    out = tmp_path / "requirements.txt"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "uv",
            "export",
            "--no-hashes",
            "--no-default-groups",
            "--no-emit-project",
            "--frozen",
            "--quiet",
            "-o",
            str(out),
        ],
        cwd=PROJECT_ROOT,
        check=True,
    )
    pins = [
        line for line in out.read_text().splitlines() if line and not line.startswith(("#", " "))
    ]
    shipped = (PROJECT_ROOT / "pipeline" / "requirements.txt").read_text().splitlines()
    shipped = [line for line in shipped if line and not line.startswith(("#", " "))]
    assert shipped == pins, "pipeline/requirements.txt is stale: run `make lock`"
