"""inference.compare: the figures of a candidate against the live model, held to plain numpy
on the same predictions (|candidate - live| by hand, the percentiles of every row, the
classes compared one by one)."""

from __future__ import annotations

import numpy as np
import pytest

from inference.compare import Comparison, abs_diffs, agreements

SEED = 11


def predictions(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """A live model's predictions (prices) and a candidate's that differ by a few percent."""
    rng = np.random.default_rng(seed)
    live = rng.uniform(300.0, 19_000.0, n)
    return live, live * rng.normal(1.0, 0.03, n)


def test_abs_diffs_are_the_distance_of_each_pair() -> None:
    assert abs_diffs([1.0, 5.0, -2.0], [1.5, 3.0, -2.0]).tolist() == [0.5, 2.0, 0.0]
    with pytest.raises(ValueError, match="3 live predictions against 2 of the candidate"):
        abs_diffs([1.0, 2.0, 3.0], [1.0, 2.0])


def test_a_regressor_is_compared_by_the_absolute_differences() -> None:
    live, candidate = predictions(1_000)
    comparison = Comparison("regression")
    # Added in uneven parts, as the shadow adds requests of every size.
    for part in np.split(np.arange(1_000), [1, 7, 300, 301, 999]):
        comparison.add(live[part].tolist(), candidate[part].tolist())
    diff = [abs(c - x) for x, c in zip(live.tolist(), candidate.tolist(), strict=True)]
    figures = comparison.figures()
    assert figures["task"] == "regression" and figures["rows"] == 1_000
    got = figures["abs_diff"]
    assert got["max"] == max(diff)
    assert got["sum"] == pytest.approx(sum(diff), rel=1e-12)
    assert got["mean"] == pytest.approx(sum(diff) / 1_000, rel=1e-12)
    assert got["p50"] == pytest.approx(np.median(diff), rel=1e-12)
    ranked = sorted(diff)  # numpy's default percentile: linear between the closest ranks
    rank = 0.99 * (len(ranked) - 1)
    low = int(rank)
    p99 = ranked[low] + (rank - low) * (ranked[low + 1] - ranked[low])
    assert got["p99"] == pytest.approx(p99, rel=1e-12)
    assert got["percentile_rows"] == 1_000
    assert got["max"] > got["p99"] > got["p50"] > 0


def test_percentiles_cover_the_newest_rows_and_the_totals_every_row() -> None:
    live, candidate = predictions(600)
    comparison = Comparison("regression", keep=200)
    for start in range(0, 600, 100):
        comparison.add(live[start : start + 100], candidate[start : start + 100])
    diff = np.abs(candidate - live)
    got = comparison.figures()["abs_diff"]
    assert comparison.rows == 600 and got["percentile_rows"] == 200
    assert got["p50"] == pytest.approx(np.median(diff[-200:]), rel=1e-12)
    assert got["p50"] != pytest.approx(np.median(diff), rel=1e-6)  # not the whole history
    assert got["sum"] == pytest.approx(diff.sum(), rel=1e-12) and got["max"] == diff.max()


def test_a_classifier_is_compared_by_agreement() -> None:
    rng = np.random.default_rng(SEED)
    classes = np.array(["Adelie", "Chinstrap", "Gentoo"])
    live = classes[rng.integers(0, 3, 500)].tolist()
    candidate = [c if rng.random() < 0.8 else "Gentoo" for c in live]
    agreed = sum(x == c for x, c in zip(live, candidate, strict=True))
    comparison = Comparison("classification")
    same = comparison.add(live[:123], candidate[:123])
    assert same.tolist() == [x == c for x, c in zip(live[:123], candidate[:123], strict=True)]
    comparison.add(live[123:], candidate[123:])
    assert comparison.figures() == {
        "task": "classification",
        "rows": 500,
        "agreed": agreed,
        "agreement_ratio": agreed / 500,
    }
    assert 0 < agreed < 500
    with pytest.raises(ValueError, match="2 live predictions against 1 of the candidate"):
        agreements(["a", "b"], ["a"])


def test_nothing_compared_yet_has_no_figures() -> None:
    assert Comparison("regression").figures() == {
        "task": "regression",
        "rows": 0,
        "abs_diff": None,
    }
    assert Comparison("classification").figures()["agreement_ratio"] is None
