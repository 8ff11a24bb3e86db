"""Each step's pure function on tiny frames, failure cases included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from inference.loading import load_pipeline
from pipeline.check_data import run_checks
from pipeline.checks import rules
from pipeline.download import data_format, fetch, read_table
from pipeline.errors import PipelineError
from pipeline.evaluate import beats, passes
from pipeline.preprocess import clean
from pipeline.run import selected_steps
from pipeline.segregate import split
from pipeline.train import build_model, export_model, feature_columns, fit, score
from tests.helpers.factories import synthetic_diamonds

FEATURES = {
    "numeric": ["carat", "depth", "table", "x", "y", "z"],
    "categorical": ["cut"],
    "ordinal": {"color": list("JIHGFED"), "clarity": ["I1", "SI2", "SI1", "VS2", "VS1", "IF"]},
    "text": None,
}
FOREST = {
    "estimator": {
        "_target_": "sklearn.ensemble.RandomForestRegressor",
        "n_estimators": 3,
        "max_depth": 3,
        "random_state": 0,
        "n_jobs": 1,
    },
}


# -- download ----------------------------------------------------------------------------


def test_data_format_from_name_or_declared():
    assert data_format("https://host/d.parquet?x=1") == "parquet"
    assert data_format("data/d.CSV") == "csv"
    assert data_format("blob", "csv") == "csv"
    with pytest.raises(PipelineError, match="cannot tell the format"):
        data_format("data/d.txt")
    with pytest.raises(PipelineError, match="data.format"):
        data_format("d.csv", "xlsx")


def test_fetch_copies_paths_and_file_urls(tmp_path, diamonds_rows):
    source = tmp_path / "in.csv"
    diamonds_rows.to_csv(source, index=False)
    for url in (str(source), source.as_uri()):
        dest = fetch(url, tmp_path / "out.csv")
        pd.testing.assert_frame_equal(read_table(dest, "csv"), diamonds_rows)


def test_fetch_fails_clearly(tmp_path):
    with pytest.raises(PipelineError, match="data file not found"):
        fetch(str(tmp_path / "missing.csv"), tmp_path / "out.csv")
    with pytest.raises(PipelineError, match="unsupported URL scheme 'ftp'"):
        fetch("ftp://host/d.csv", tmp_path / "out.csv")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(PipelineError, match="cannot read bad.parquet as parquet"):
        read_table(tmp_path / "bad.parquet", "parquet")


# -- preprocess --------------------------------------------------------------------------


def test_clean_counts_each_rule(diamonds_rows):
    raw = pd.concat([diamonds_rows, diamonds_rows.iloc[[0]]], ignore_index=True)
    raw.loc[1, "z"] = 0.0
    raw.loc[2, "price"] = None
    cleaned, dropped = clean(
        raw, required=["price"], positive=["x", "y", "z"], bounds={"y": {"min": None, "max": 5.0}}
    )
    assert dropped == {
        "duplicates": 1,
        "required:price": 1,
        "positive:x": 0,
        "positive:y": 0,
        "positive:z": 1,
        "bounds:y": 0,
    }
    assert len(cleaned) == 1 and cleaned.loc[0, "carat"] == 0.23


def test_clean_bounds_are_inclusive(diamonds_rows):
    cleaned, dropped = clean(diamonds_rows, bounds={"price": {"min": 326, "max": 335}})
    assert cleaned["price"].tolist() == [326, 335]
    assert dropped["bounds:price"] == 1


def test_clean_rejects_unknown_columns(diamonds_rows):
    with pytest.raises(PipelineError, match="missing column"):
        clean(diamonds_rows, positive=["weight"])


# -- check_data --------------------------------------------------------------------------


def test_column_and_category_checks(diamonds_rows):
    assert rules.check_columns(diamonds_rows, {"carat": "number", "cut": "string"}) == []
    problems = rules.check_columns(diamonds_rows, {"cut": "number", "weight": "number"})
    assert problems == ["column 'cut' should be number, is object", "column 'weight' is missing"]
    assert rules.check_categories(diamonds_rows, {"cut": ["Ideal", "Good", "Premium"]}) == []
    assert "['Premium']" in rules.check_categories(diamonds_rows, {"cut": ["Ideal", "Good"]})[0]


def test_range_and_row_count_checks(diamonds_rows):
    assert rules.check_ranges(diamonds_rows, {"carat": [0.1, 2.0]}) == []
    [problem] = rules.check_ranges(diamonds_rows, {"carat": [0.1, 1.0]})
    assert "1 value(s) outside [0.1, 1.0]" in problem
    assert rules.check_row_count(diamonds_rows, 1, 3) == []
    assert rules.check_row_count(diamonds_rows, 4, 10) == ["3 rows, expected between 4 and 10"]


@pytest.mark.parametrize("correction", ["bonferroni", "holm"])
def test_drift_detects_a_shift_and_accepts_the_same_distribution(correction: str):
    from scipy import stats

    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"a": rng.normal(size=500), "c": rng.choice(list("xyz"), 500)})
    same = pd.DataFrame({"a": rng.normal(size=500), "c": rng.choice(list("xyz"), 500)})
    shifted = pd.DataFrame(
        {"a": rng.normal(1.0, size=500), "c": rng.choice(list("xyz"), 500, p=[0.8, 0.1, 0.1])}
    )
    columns = {"a": "number", "c": "string"}
    assert (
        rules.drifted_columns(rules.drift_pvalues(same, reference, columns), 0.05, correction) == []
    )
    pvalues = rules.drift_pvalues(shifted, reference, columns)
    assert pvalues["a"] == pytest.approx(stats.ks_2samp(shifted["a"], reference["a"]).pvalue)
    assert pvalues["c"] < pvalues["a"]
    assert rules.drifted_columns(pvalues, 0.05, correction) == ["c", "a"]  # smallest p first


def test_holm_rejects_at_least_what_bonferroni_does():
    pvalues = {"a": 0.01, "b": 0.02, "c": 0.5}
    assert rules.drifted_columns(pvalues, 0.05, "bonferroni") == ["a"]
    assert rules.drifted_columns(pvalues, 0.05, "holm") == ["a", "b"]
    with pytest.raises(ValueError):
        rules.drifted_columns(pvalues, 0.05, "none")


def test_run_checks_reports_which_check_failed_and_why(diamonds_rows):
    checks = {
        "columns": {"carat": "number", "cut": "string"},
        "categories": {"cut": ["Ideal", "Good"]},
        "ranges": {"carat": [0.1, 6.0]},
        "rows": {"min": 1, "max": 10},
        "drift": {"alpha": 0.05, "correction": "bonferroni"},
    }
    passed, failures = run_checks(diamonds_rows, None, checks)
    assert failures == ["categories: column 'cut' has unexpected values ['Premium']"]
    assert set(passed) == {"columns", "ranges", "row_count", "no_drift"}


# -- segregate ---------------------------------------------------------------------------


def test_split_is_reproducible_and_stratifies():
    frame = pd.DataFrame({"v": range(40), "k": ["a", "b"] * 20})
    a_train, a_test = split(frame, 0.25, seed=1, stratify="k")
    b_train, b_test = split(frame, 0.25, seed=1, stratify="k")
    pd.testing.assert_frame_equal(a_test, b_test)
    assert len(a_test) == 10 and a_test["k"].value_counts().tolist() == [5, 5]
    assert set(a_train["v"]).isdisjoint(a_test["v"])


def test_split_rejects_bad_settings(diamonds_rows):
    with pytest.raises(PipelineError, match="test_size"):
        split(diamonds_rows, 1.5, seed=0)
    with pytest.raises(PipelineError, match="stratify column 'kind'"):
        split(diamonds_rows, 0.3, seed=0, stratify="kind")


# -- train / evaluate --------------------------------------------------------------------


def test_build_model_uses_every_feature_kind(tmp_path):
    features = {**FEATURES, "text": "note", "tfidf_max_features": 5}
    frame = synthetic_diamonds(30).assign(note=["bright stone", None, "dull"] * 10)
    model = build_model(features, FOREST).fit(frame[feature_columns(features)], frame["price"])
    names = list(model[:-1].get_feature_names_out())
    assert "numeric__carat" in names and "categorical__cut_Ideal" in names
    assert "ordinal__color" in names and any(n.startswith("text__") for n in names)
    assert feature_columns(features)[-1] == "note"
    # The text branch (np.ravel + TF-IDF) survives the skops export too.
    export_model(model, tmp_path / "m", frame[feature_columns(features)])
    X = frame[feature_columns(features)]
    np.testing.assert_allclose(load_pipeline(tmp_path / "m").predict(X), model.predict(X))


def test_a_missing_category_is_imputed_whether_none_or_nan():
    """Parquet gives None for a missing string, the service NaN: the model reads both as
    missing (imputed with the most frequent category), never None as a category of its own."""
    frame = synthetic_diamonds(60)
    frame["cut"] = frame["cut"].astype(object)
    frame.loc[:9, "cut"] = None  # as in penguins' training data (sex)
    frame.loc[10:14, "color"] = None
    X = frame[feature_columns(FEATURES)]
    model = build_model(FEATURES, FOREST).fit(X, frame["price"])
    encoder = model[0].named_transformers_["categorical"][-1]
    assert None not in list(encoder.categories_[0])
    mode = X["cut"].mode()[0]
    three = pd.concat([X.head(1)] * 3, ignore_index=True)
    three["cut"] = pd.Series([None, np.nan, mode], dtype=object)
    three["color"] = pd.Series([np.nan, None, X["color"].mode()[0]], dtype=object)
    predictions = model.predict(three)
    assert predictions[0] == predictions[1] == predictions[2]


def test_build_model_rejects_unknown_estimator():
    with pytest.raises(PipelineError, match="model.estimator"):
        build_model(FEATURES, {"estimator": {"_target_": "sklearn.ensemble.GradientBoosting"}})


def test_fit_is_deterministic_and_handles_unknown_categories():
    frame = synthetic_diamonds(60)
    threaded = {"estimator": {**FOREST["estimator"], "n_jobs": -1}}
    first, metrics, X_val, _ = fit(frame, "price", FEATURES, threaded, 0.25, seed=3)
    second, metrics_again, _, _ = fit(frame, "price", FEATURES, threaded, 0.25, seed=3)
    assert metrics == metrics_again and set(metrics) == {"r2", "mae", "rmse"}
    assert first[-1].n_jobs == 1  # inference is single-threaded, hence bit-reproducible
    np.testing.assert_array_equal(first.predict(X_val), second.predict(X_val))
    unseen = X_val.head(1).assign(cut="Astonishing", color="Z")
    assert np.isfinite(first.predict(unseen)).all()


def test_fit_names_missing_columns(diamonds_rows):
    with pytest.raises(PipelineError, match="lacks column.*clarity"):
        fit(diamonds_rows.drop(columns="clarity"), "price", FEATURES, FOREST, 0.3, seed=0)


def test_classifier_export_gives_probabilities(tmp_path):
    frame = synthetic_diamonds(60).assign(kind=lambda d: np.where(d.carat > 1, "big", "small"))
    forest = {
        "estimator": {
            "_target_": "sklearn.ensemble.RandomForestClassifier",
            "n_estimators": 3,
            "random_state": 0,
        },
    }
    model, metrics, X_val, y_val = fit(frame, "kind", FEATURES, forest, 0.25, 0, stratify="kind")
    assert set(metrics) == {"accuracy", "f1_macro", "log_loss"}
    export_model(model, tmp_path / "m", frame[feature_columns(FEATURES)])
    loaded = load_pipeline(tmp_path / "m")
    proba = loaded.predict_proba(X_val)
    assert list(loaded.classes_) == ["big", "small"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert score(loaded, X_val, y_val) == metrics


def test_export_writes_an_mlflow_model_that_loads_back(tmp_path):
    import json

    import yaml

    frame = synthetic_diamonds(40)
    model, _, _, _ = fit(frame, "price", FEATURES, FOREST, 0.25, seed=0)
    X = frame[feature_columns(FEATURES)]
    export_model(model, tmp_path / "m", X, {"target": "price"})
    mlmodel = yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())
    assert {"python_function", "sklearn"} <= set(mlmodel["flavors"])
    assert mlmodel["flavors"]["sklearn"]["serialization_format"] == "skops"
    assert mlmodel["metadata"]["task"] == "regression"
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert [c["name"] for c in inputs] == list(X.columns)
    assert (tmp_path / "m" / "serving_input_example.json").exists()
    assert "scikit-learn==" in (tmp_path / "m" / "requirements.txt").read_text()
    loaded = load_pipeline(tmp_path / "m")
    np.testing.assert_allclose(
        loaded.predict(X.head(3)), mlmodel["metadata"]["example_predictions"]
    )


def test_prod_gate_rules():
    assert passes({"r2": 0.96}, "r2", 0.95, higher_is_better=True)
    assert not passes({"r2": 0.94}, "r2", 0.95, higher_is_better=True)
    assert passes({"mae": 300.0}, "mae", 400.0, higher_is_better=False)
    with pytest.raises(PipelineError, match="evaluate.metric 'auc'"):
        passes({"r2": 0.9}, "auc", 0.5, True)
    assert beats({"r2": 0.9}, None, "r2", True)
    assert not beats({"r2": 0.9}, {"r2": 0.95}, "r2", True)
    assert beats({"mae": 1.0}, {"mae": 2.0}, "mae", False)


def test_selected_steps():
    assert selected_steps("all")[0] == "download"
    assert selected_steps("evaluate,train") == ["train", "evaluate"]
    assert selected_steps(["check_data"]) == ["check_data"]
    with pytest.raises(PipelineError, match="unknown step.*tran"):
        selected_steps("tran")
