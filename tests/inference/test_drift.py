"""One home for the drift statistics: what the service computes from a model's compact
reference equals what check_data computes from the frames (statistic and p-value), and both
equal scipy called on the raw frames the way check_data always called it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from inference import drift
from pipeline.checks import rules
from tests.helpers.monitoring import FEATURES, diamonds_with_gaps

KINDS = {c: ("string" if c in ("cut", "color", "clarity") else "number") for c in FEATURES}


def reference_of(frame: pd.DataFrame) -> drift.Reference:
    """The reference as the importer builds it (importers.reference)."""
    features = {
        c: drift.Distribution.of(frame[c], drift.NUMBER if k == "number" else drift.CATEGORY)
        for c, k in KINDS.items()
    }
    return drift.Reference(features=features, prediction=None)


def scipy_as_check_data_called_it(sample: pd.DataFrame, reference: pd.DataFrame, column: str):
    """check_data before the core existed: scipy on the frames, pandas' own category table."""
    a, b = sample[column].dropna(), reference[column].dropna()
    if KINDS[column] == "number":
        return stats.ks_2samp(a, b)
    counts = pd.concat([a.astype(str).value_counts(), b.astype(str).value_counts()], axis=1).fillna(
        0
    )
    return stats.chi2_contingency(counts.to_numpy())


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return diamonds_with_gaps()


@pytest.mark.parametrize("shift", [1.0, 1.3])
def test_live_statistics_equal_check_data(data: pd.DataFrame, tmp_path: Path, shift: float):
    sample = data.sample(3_000, random_state=7).reset_index(drop=True)
    sample["carat"] = sample["carat"] * shift
    reference = reference_of(data)
    reference.save(tmp_path)
    loaded = drift.Reference.load(tmp_path)  # what a served model holds
    live = drift.evaluate(loaded, drift.frame_columns(sample, FEATURES))
    offline = drift.frame_drift(sample, data, KINDS)
    pvalues = rules.drift_pvalues(sample, data, KINDS)
    for column in FEATURES:
        got = live["features"][column]
        assert got["statistic"] == offline[column].statistic, column
        assert got["p_value"] == offline[column].p_value == pvalues[column], column
        raw = scipy_as_check_data_called_it(sample, data, column)
        assert got["statistic"] == pytest.approx(raw.statistic, rel=1e-12, abs=1e-12), column
        assert got["p_value"] == pytest.approx(raw.pvalue, rel=1e-12, abs=1e-300), column
    drifted = rules.drifted_columns(pvalues, 0.05, "bonferroni")
    assert live["drifted"] == drifted
    assert ("carat" in drifted) == (shift != 1.0)


def test_quality_ratios_count_missing_unknown_and_out_of_range(data: pd.DataFrame) -> None:
    reference = reference_of(data)
    window = data.sample(1_000, random_state=3).reset_index(drop=True)
    window.loc[:99, "cut"] = "Astonishing"  # 100 unknown categories
    window.loc[:199, "depth"] = np.nan  # 200 missing (plus the gaps already there)
    window.loc[:49, "table"] = 1_000.0  # 50 beyond the reference's range
    got = drift.evaluate(reference, drift.frame_columns(window, FEATURES))["features"]
    assert got["cut"]["unknown_category_ratio"] == 0.1
    assert got["cut"]["unknown_categories"] == ["Astonishing"]
    assert got["depth"]["missing_ratio"] >= 0.2
    assert got["table"]["out_of_range_ratio"] == 0.05
    assert got["carat"]["missing_ratio"] == 0.0
    assert got["cut"]["detected"] and not got["carat"]["detected"]


def test_too_few_rows_are_not_tested(data: pd.DataFrame) -> None:
    reference = reference_of(data)
    window = drift.frame_columns(data.head(50), FEATURES)
    got = drift.evaluate(reference, window, min_rows=100)
    assert not got["tested"] and got["drifted"] == []
    assert got["features"]["carat"]["p_value"] is None
    assert got["features"]["color"]["missing_ratio"] == data.head(50)["color"].isna().mean()


@pytest.mark.parametrize(
    ("correction", "expected"),
    [("bonferroni", ["a"]), ("holm", ["a", "b"])],
)
def test_corrections(correction: str, expected: list[str]) -> None:
    p_values = {"a": 0.001, "b": 0.02, "c": 0.5}
    assert drift.rejected(p_values, 0.05, correction) == expected
    assert rules.drifted_columns(p_values, 0.05, correction) == expected
    with pytest.raises(ValueError, match="unknown"):
        drift.rejected(p_values, 0.05, "fdr")


def test_reference_files_hold_no_pickle(data: pd.DataFrame, tmp_path: Path) -> None:
    reference_of(data).save(tmp_path)
    with np.load(tmp_path / drift.REFERENCE_ARRAYS, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    assert drift.reference_size(tmp_path) < 100_000


def test_a_classifier_prediction_is_tested_as_labels() -> None:
    """Predicted labels are counted (chi-square), whatever their type."""
    rng = np.random.default_rng(0)
    labels = np.array(["Adelie", "Gentoo", "Chinstrap"])
    reference = drift.Reference(
        features={"bill": drift.Distribution.of(rng.normal(40, 5, 3_000), drift.NUMBER)},
        prediction=drift.Distribution.of(labels[rng.integers(0, 3, 3_000)], drift.CATEGORY),
    )
    window = {"bill": rng.normal(40, 5, 600)}
    same = drift.evaluate(reference, window, labels[rng.integers(0, 3, 600)])
    assert same["prediction"]["test"] == "chi2" and same["drifted"] == []
    shifted = drift.evaluate(reference, window, np.array(["Adelie"] * 500 + ["Gentoo"] * 100))
    assert shifted["drifted"] == [drift.PREDICTION]
    assert shifted["prediction"]["detected"] and not shifted["features"]["bill"]["detected"]


def test_large_columns_are_reduced_and_say_so(tmp_path: Path) -> None:
    """Free text or millions of distinct numbers: the reference keeps a seeded sample of the
    numbers and the most frequent categories (the rest as one count), and says so."""
    rng = np.random.default_rng(1)
    n = drift.MAX_DISTINCT_NUMBERS + 5_000
    words = np.array([f"w{i}" for i in range(5_000)])
    reference = drift.Reference(
        features={
            "x": drift.Distribution.of(rng.normal(size=n), drift.NUMBER),
            "w": drift.Distribution.of(words[rng.integers(0, 5_000, n)], drift.CATEGORY),
        },
        prediction=None,
    )
    reference.save(tmp_path)
    loaded = drift.Reference.load(tmp_path)
    x, w = loaded.features["x"], loaded.features["w"]
    assert x.reduced and x.present == drift.MAX_DISTINCT_NUMBERS and x.rows == n
    assert w.reduced and len(w.categories) == drift.MAX_CATEGORIES and w.present == n
    assert loaded.describe()["features"]["w"]["reduced"] is True
    assert drift.reference_size(tmp_path) < 2_000_000
    same = {"x": rng.normal(size=2_000), "w": words[rng.integers(0, 5_000, 2_000)]}
    got = drift.evaluate(loaded, same)
    assert got["drifted"] == [] and got["features"]["w"]["unknown_category_ratio"] is None
    frequent = max(w.categories, key=w.categories.get)
    shifted = {"x": rng.normal(0.3, size=2_000), "w": np.array([frequent] * 2_000)}
    assert set(drift.evaluate(loaded, shifted)["drifted"]) == {"x", "w"}
