"""The importer's CLI in subprocesses (each with its own BENTOML_HOME): its one-line output,
its one-line errors, the real `bentoml models get`, an import killed mid-way, and two imports
of the same artifact at once."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from artifacts.store import ArtifactVersion
from tests.helpers.importer_models import (
    ARTIFACT_METADATA,
    BENTOML_CLI,
    PROJECT_ROOT,
    PYTHON,
    TEST_METADATA,
    bentoml_home,
    log_prod,
    run_importer,
    subprocess_env,
    train_export,
)


@pytest.fixture(scope="module")
def regressor(tmp_path_factory) -> Path:
    return train_export(tmp_path_factory.mktemp("models") / "regressor")


@pytest.fixture
def prod(tmp_path, regressor) -> ArtifactVersion:
    return log_prod(tmp_path / "tagserve" / "store" / "tagserve-diamonds", regressor)


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return subprocess_env(tmp_path / "bentoml", tmp_path / "tagserve")


def model_dirs(bentoml_dir: Path) -> list[str]:
    """What `bentoml models list` would read: <models>/<name>/<version>/ folders."""
    models = bentoml_dir / "models"
    if not models.exists():
        return []
    return sorted(f"{d.name}:{v.name}" for d in models.iterdir() for v in d.iterdir() if v.is_dir())


def test_import_prints_one_line_then_already_imported_and_bentoml_shows_lineage(prod, env):
    tag = f"tagserve-diamonds:v0-{prod.digest[:12]}"

    first = run_importer(env=env)  # no arguments: what `make demo` left
    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        f"imported {tag} from local:tagserve-diamonds/model_export:prod (digest {prod.digest})\n"
    )
    # This store holds no drift reference (clean_data:reference), so the importer says, in one
    # line, that the model will be served unmonitored (docs/monitoring.md); nothing else.
    warned = first.stderr.splitlines()
    assert len(warned) == 1 and "served unmonitored: no drift reference" in warned[0], warned

    again = run_importer("model_export:prod", "--json", env=env)
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["status"] == "already imported" and data["created"] is False
    assert (data["tag"], data["digest"]) == (tag, prod.digest)

    shown = subprocess.run(
        [BENTOML_CLI, "models", "get", tag, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    model = json.loads(shown.stdout)
    assert model["labels"] == {"stage": "prod", "source": "local", "artifact_version": "v0"}
    meta = model["metadata"]
    assert meta["artifact"] == "model_export:v0" and meta["digest"] == prod.digest
    assert meta["run_id"] == ARTIFACT_METADATA["run_id"]
    assert meta["git_commit"] == ARTIFACT_METADATA["git_commit"]
    assert meta["lineage"]["trainval_data"] == ARTIFACT_METADATA["lineage"]["trainval_data"]
    assert meta["lineage"]["test_data"] == TEST_METADATA["test_data"]
    assert meta["metrics"]["test"] == TEST_METADATA["test_metrics"]
    assert meta["task"] == "regression" and meta["signature"]["inputs"]


def test_errors_are_one_line_without_traceback(prod, env, tmp_path):
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "model.pkl").write_bytes(b"\x80")
    no_wandb_login = {**env, "HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "wb")}
    cases = [
        (["model_export:nope"], env, 1, "error: unknown artifact or alias model_export:nope"),
        ([str(not_a_model)], env, 1, "error: not an MLflow model: no MLmodel file in"),
        (["wandb:team/p/model_export:prod"], no_wandb_login, 1, "error: no W&B credentials"),
        (["--bogus"], env, 2, "error: unrecognized arguments: --bogus"),
    ]
    for args, case_env, code, message in cases:
        result = run_importer(*args, env=case_env)
        assert result.returncode == code, (args, result.stderr)
        assert result.stdout == ""
        assert result.stderr.startswith(message), (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert model_dirs(tmp_path / "bentoml") == []


KILL_POINTS = {
    # BentoML copying the model files into the (staging) store: where a plain
    # `bentoml.mlflow.import_model` would leave a partial model behind.
    "mid-copy": """
        import shutil
        real_copyfile = shutil.copyfile
        def copyfile(src, dst, *args, **kwargs):
            if "/.tagserve-import/" in str(dst) and str(dst).endswith("model.skops"):
                os.kill(os.getpid(), signal.SIGKILL)
            return real_copyfile(src, dst, *args, **kwargs)
        shutil.copyfile = copyfile
    """,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_an_import_killed_midway_leaves_no_model(point, prod, env, tmp_path):
    script = "import os, signal, sys\n" + textwrap.dedent(KILL_POINTS[point])
    script += "from importers.cli import main\nsys.exit(main([]))\n"
    killed = subprocess.run(
        [PYTHON, "-c", script],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert killed.returncode == -9, killed.stderr
    bentoml_dir = tmp_path / "bentoml"
    assert model_dirs(bentoml_dir) == []
    leftovers = [p for p in (bentoml_dir / ".tagserve-import").iterdir() if p.is_dir()]
    assert leftovers  # the killed import's scratch space, outside the store

    import importers

    with bentoml_home(bentoml_dir):
        result = importers.import_model(home=tmp_path / "tagserve")
    assert result.created
    assert model_dirs(bentoml_dir) == [result.tag]
    assert not any(p.exists() for p in leftovers)  # removed by the next import


def test_two_imports_of_the_same_artifact_at_once_make_one_model(prod, env, tmp_path):
    processes = [
        subprocess.Popen(
            [PYTHON, "-m", "importers", "--json"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=180) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err for _, err in outputs]
    results = [json.loads(out) for out, _ in outputs]
    assert results[0]["tag"] == results[1]["tag"]
    assert sorted(r["created"] for r in results) == [False, True]
    assert model_dirs(tmp_path / "bentoml") == [results[0]["tag"]]
