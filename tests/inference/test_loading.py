"""The one loader: a model folder is untrusted input. Hostile folders are refused on every
path (the loader, the importer, offline scoring) and their code never runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from inference.errors import ModelRefused
from inference.loading import ALLOWED_TYPES, load_pipeline
from inference.model import load_model
from tests.helpers.factories import synthetic_diamonds
from tests.helpers.importer_models import writable_copy
from tests.helpers.project import PROJECT_ROOT, PYTHON


def independent(folder: Path):
    """The export's pipeline as skops itself loads it, trusting every type in it: the
    reference, apart from tagserve's loader and its allow-list."""
    import skops.io

    path = folder / "model.skops"
    return skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))


def example_rows(folder: Path) -> pd.DataFrame:
    split = json.loads((folder / "serving_input_example.json").read_text())["dataframe_split"]
    return pd.DataFrame(split["data"], columns=split["columns"])


def test_loads_the_export_single_threaded_and_predicts_as_exported(exported: Path) -> None:
    model = load_pipeline(exported)
    assert all(v == 1 for k, v in model.get_params().items() if k.endswith("n_jobs"))
    loaded = load_model(exported)
    assert loaded.contract.features == list(independent(exported).feature_names_in_)
    frame = synthetic_diamonds(200, seed=5)[loaded.contract.features]
    np.testing.assert_array_equal(loaded.predict(frame), independent(exported).predict(frame))
    # What the trained model predicted for its input example at export, value for value.
    recorded = yaml.safe_load((exported / "MLmodel").read_text())["metadata"]
    example = example_rows(exported)
    assert len(example) == 3
    assert (
        loaded.predict(example[loaded.contract.features]).tolist()
        == (recorded["example_predictions"])
    )


def test_a_model_with_a_code_folder_is_refused_and_its_code_never_runs(
    code_model: Path, marker: Path
) -> None:
    with pytest.raises(ModelRefused, match="ships code of its own"):
        load_pipeline(code_model)
    assert not marker.exists()


def test_a_type_outside_the_allow_list_is_refused_before_loading(
    foreign_type_model: Path, marker: Path, evil_on_path: Path
) -> None:
    assert "evil.Boom" not in ALLOWED_TYPES
    with pytest.raises(ModelRefused, match=r"outside tagserve's allow-list: evil\.Boom"):
        load_pipeline(foreign_type_model)
    assert not marker.exists()


def _edit(folder: Path, edit) -> Path:
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    edit(mlmodel["flavors"]["sklearn"])
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return folder


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda f: f.update(serialization_format="cloudpickle"), "not skops"),
        (lambda f: f.update(serialization_format="pickle"), "not skops"),
        (lambda f: f.update(pickled_model="/etc/passwd"), "not inside the folder"),
        (lambda f: f.update(pickled_model="../model.skops"), "not inside the folder"),
    ],
    ids=["cloudpickle", "pickle", "absolute-path", "leaves-the-folder"],
)
def test_pickles_and_paths_out_of_the_folder_are_refused(
    exported: Path, tmp_path: Path, edit, problem: str
) -> None:
    folder = _edit(writable_copy(exported, tmp_path / "model"), edit)
    with pytest.raises(ModelRefused, match=problem):
        load_pipeline(folder)


@pytest.mark.parametrize(
    ("hostile", "problem"),
    [
        ("code_model", "ships code of its own"),
        ("foreign_type_model", "outside tagserve's allow-list: evil.Boom"),
    ],
)
def test_every_command_line_refuses_a_hostile_model_in_one_line(
    hostile: str,
    problem: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    marker: Path,
    evil_on_path: Path,
) -> None:
    import os

    folder = request.getfixturevalue(hostile)
    rows = tmp_path / "rows.csv"
    synthetic_diamonds(5).to_csv(rows, index=False)
    env = {
        **os.environ,
        "PYTHONPATH": f"{evil_on_path}{os.pathsep}{PROJECT_ROOT}",
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "TAGSERVE_HOME": str(tmp_path / "home"),
    }
    commands = {
        "importer": [PYTHON, "-m", "importers", f"dir:{folder}"],
        "clients score": [
            PYTHON,
            "-m",
            "clients",
            "score",
            str(rows),
            str(tmp_path / "out.csv"),
            "--model-dir",
            str(folder),
            "--no-progress",
        ],
        # refused on the driver, before a Spark session starts
        "clients spark": [
            PYTHON,
            "-m",
            "clients",
            "spark",
            str(rows),
            str(tmp_path / "spark-out"),
            "--model-dir",
            str(folder),
        ],
    }
    for name, cmd in commands.items():
        done = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 1, f"{name}: {done.stdout} {done.stderr}"
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
        assert problem in done.stderr, done.stderr
        assert not marker.exists(), f"{name} ran the model's code"
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "spark-out").exists()
    assert not list((tmp_path / "bentoml").glob("models/*/*/model.yaml"))
