"""The whole pipeline on the shipped data, in temp folders (local store, W&B offline)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from artifacts.store import LocalArtifactStore
from inference.loading import load_pipeline
from pipeline.run import run
from pipeline.tracking import store_root


def _predict_test_set(cfg) -> tuple[np.ndarray, dict]:
    store = LocalArtifactStore(store_root(cfg))
    prod = store.get("model_export:prod")
    test = pd.read_parquet(store.get("test_data:latest").file())
    model = load_pipeline(prod.path)
    return model.predict(test[list(model.feature_names_in_)]), prod.metadata["test_metrics"]


def test_default_run_offline_ends_with_a_prod_model(make_cfg, tmp_path):
    cfg = make_cfg(tracking="offline")
    produced = run(cfg)
    assert list(produced) == [
        "raw_data",
        "clean_data",
        "trainval_data",
        "test_data",
        "model_export",
    ]
    store = LocalArtifactStore(store_root(cfg))
    prod = store.get("model_export:prod")
    assert prod.qualified_name == produced["model_export"]
    raw = store.get("raw_data:latest")
    assert raw.metadata["rows"] == 53940 and raw.metadata["url"] == "data/diamonds.parquet"
    assert (
        raw.metadata["sha256"] == "5f65988f96771ce23058deb68c26ea135c6a40b8471782c43dc49d2adfb0067e"
    )
    clean = store.get("clean_data:latest")
    assert (
        clean.metadata["dropped"]["duplicates"] == 146
        and clean.metadata["dropped"]["positive:z"] > 0
    )
    assert store.get("clean_data:reference").version == clean.version
    # The inference artifact: an MLflow model that predicts its own input example.
    mlmodel = (prod.path / "MLmodel").read_text()
    assert "signature:" in mlmodel and "python_function" in mlmodel
    example = pd.read_json(prod.path / "input_example.json", orient="split")
    model = load_pipeline(prod.path)
    expected = _mlmodel_metadata(prod.path)["example_predictions"]
    np.testing.assert_allclose(model.predict(example), expected)
    # The bounds the run's own rules put on the inputs, part of the model's domain: positive
    # sizes and the checks' ranges (the tighter), y's cleaning cap; not the target's.
    bounds = _mlmodel_metadata(prod.path)["bounds"]
    assert bounds["x"] == {"minimum": 0.1, "maximum": 20.0}
    assert bounds["carat"] == {"minimum": 0.1, "maximum": 6.0} and "price" not in bounds
    meta = prod.metadata
    assert meta["test_metrics"]["r2"] > 0.95 and set(meta["val_metrics"]) == {"r2", "mae", "rmse"}
    assert set(meta["lineage"]) == {"raw_data", "clean_data", "trainval_data"}
    assert meta["lineage"]["raw_data"]["digest"] == raw.digest
    assert meta["config"]["model"]["estimator"]["n_estimators"] == 5
    # W&B ran for real, offline: one run per step, ready for `wandb sync`.
    runs = list((tmp_path / "home" / "wandb").glob("offline-run-*"))
    assert len(runs) == 6


def _mlmodel_metadata(path):
    import yaml

    return yaml.safe_load((path / "MLmodel").read_text())["metadata"]


def test_same_config_same_data_same_predictions(make_cfg, tmp_path):
    first = make_cfg(home=tmp_path / "a")
    second = make_cfg(home=tmp_path / "b")
    run(first)
    run(second)
    predictions_a, metrics_a = _predict_test_set(first)
    predictions_b, metrics_b = _predict_test_set(second)
    assert np.array_equal(predictions_a, predictions_b)  # bit-identical
    assert metrics_a == metrics_b


def test_failing_threshold_leaves_prod_unchanged(make_cfg, capsys):
    cfg = make_cfg()
    run(cfg)
    store = LocalArtifactStore(store_root(cfg))
    prod_before = store.get("model_export:prod").version
    strict = make_cfg("evaluate.threshold=0.9999", "main.steps=[train,evaluate]")
    produced = run(strict)
    assert produced["model_export"] != f"model_export:{prod_before}"
    assert store.get("model_export:prod").version == prod_before
    assert "fails >= 0.9999: prod left unchanged" in capsys.readouterr().out
    # A model that must beat prod but does not cannot take it either.
    weak = make_cfg(
        "evaluate.must_beat_prod=true",
        "evaluate.threshold=0.5",
        "model.estimator.max_depth=2",
        "main.steps=[train,evaluate]",
    )
    run(weak)
    assert store.get("model_export:prod").version == prod_before
    assert "does not beat the current prod" in capsys.readouterr().out


def test_failing_data_check_stops_the_pipeline(make_cfg):
    cfg = make_cfg("main.steps=[download,preprocess,check_data]")
    run(cfg)
    # Tighter bounds than the data: the check fails, and nothing downstream runs.
    from pipeline.errors import PipelineError

    strict = make_cfg("checks.ranges.carat=[0.2,3.0]")
    with pytest.raises(PipelineError, match=r"ranges: column 'carat' has \d+ value\(s\) outside"):
        run(strict)
    store = LocalArtifactStore(store_root(cfg))
    assert not store.exists("trainval_data:latest")


def test_drift_against_the_reference_fails_the_check(make_cfg, tmp_path):
    from pipeline.errors import PipelineError

    run(make_cfg("main.steps=[download,preprocess,check_data]"))
    # Only the cheapest stones: same schema, very different distribution.
    frame = pd.read_parquet("data/diamonds.parquet")
    frame[frame.carat < 0.5].to_parquet(tmp_path / "small.parquet")
    drifted = make_cfg(
        f"data.url={tmp_path / 'small.parquet'}", "main.steps=[download,preprocess,check_data]"
    )
    with pytest.raises(PipelineError, match="no_drift: column 'carat' drifted from the reference"):
        run(drifted)


def test_penguins_classifier_end_to_end(make_cfg):
    cfg = make_cfg("experiment=penguins")
    run(cfg)
    store = LocalArtifactStore(store_root(cfg))
    prod = store.get("model_export:prod")
    assert prod.metadata["task"] == "classification"
    assert prod.metadata["test_metrics"]["f1_macro"] >= 0.9
    model = load_pipeline(prod.path)
    test = pd.read_parquet(store.get("test_data:latest").file())
    proba = model.predict_proba(test[list(model.feature_names_in_)])
    assert list(model.classes_) == ["Adelie", "Chinstrap", "Gentoo"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert _mlmodel_metadata(prod.path)["classes"] == ["Adelie", "Chinstrap", "Gentoo"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["main.steps=bogus"], "error: unknown step(s) bogus"),
        (["no_such_key=1"], "error: bad override: Could not override 'no_such_key'"),
        (["data.url=http://127.0.0.1:9/d.csv"], "error: cannot download http://127.0.0.1:9/d.csv"),
        (
            ["data.target=weight"],
            "error: data.target column 'weight' is not in data/diamonds.parquet",
        ),
        (["data.url=missing.csv"], "error: data file not found: missing.csv"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(args, message, subprocess_env, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "tracking=disabled", *args],
        capture_output=True,
        text=True,
        env=subprocess_env,
        cwd=_root(),
        timeout=120,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    store_dir = tmp_path / "home" / "store" / "tagserve-diamonds"
    assert not list(store_dir.glob("*/v*")), "no artifact may be written"


def _root():
    from pipeline.tracking import PROJECT_ROOT

    return PROJECT_ROOT
