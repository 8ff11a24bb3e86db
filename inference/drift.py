"""Drift and data quality: the statistics ``check_data`` runs before training and the service
runs on its traffic, in one place, so that on the same sample and reference both give the same
statistic and p-value.

- Numbers: the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``'s defaults).
- Categories: the chi-square test of homogeneity (``scipy.stats.chi2_contingency``'s) on the
  table of counts, categories in sorted order (the test does not depend on the order; a fixed
  one makes its floating-point sums, hence its result, reproducible).
- A family of tests is corrected for multiple comparisons (Bonferroni, or Holm's step-down).

Both tests give scipy.stats' results, computed by :mod:`inference.stat_tests` without importing
scipy.stats (a process that tests, a replica's monitoring leader, would hold most of SciPy).

A model's reference (:class:`Reference`) is what the importer computes from its
``clean_data:reference`` (``importers.reference``) and saves in the BentoML model: per number
its sorted distinct values and their counts (``np.repeat`` gives back the sample, so the KS
test is exact, not an approximation), per category its counts, null rates, ranges and the
model's prediction distribution. :func:`evaluate` tests a window of rows against it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inference.contract import missing_mask

NUMBER, CATEGORY = "number", "category"
CORRECTIONS = ("bonferroni", "holm")
DEFAULT_ALPHA, DEFAULT_CORRECTION = 0.05, "bonferroni"
# Where the importer saves the reference inside a BentoML model, and its two files.
MONITORING_FOLDER = "monitoring"
REFERENCE_JSON, REFERENCE_ARRAYS = "reference.json", "reference.npz"
REFERENCE_FORMAT = 1
PREDICTION = "prediction"  # the prediction's name in a family of tests and in results
HISTOGRAM_BINS = 20
SHOWN_CATEGORIES = 20
# Beyond these sizes the reference keeps a seeded sample of a number column's values and the
# most frequent categories (the rest as one "other" count): a reference stays small whatever
# the data (free text, identifiers, millions of distinct measurements). Below them, and so for
# every column of the shipped data sets, it is exact.
MAX_DISTINCT_NUMBERS = 100_000
MAX_CATEGORIES = 1_000
OTHER = "(other)"
TAIL_SHARE = 0.005  # a histogram's first and last bins: values beyond these quantiles


@dataclass(frozen=True)
class TestResult:
    """One drift test: its statistic (KS's D, or chi-square) and p-value."""

    __test__ = False  # not a pytest class

    statistic: float
    p_value: float


def ks_test(sample: Any, reference: Any) -> TestResult:
    """Two-sample Kolmogorov-Smirnov test of ``sample`` against ``reference`` (no missing
    values in either), with scipy's defaults as check_data has always run it
    (``scipy.stats.ks_2samp``'s, computed by :mod:`inference.stat_tests`)."""
    from inference import stat_tests

    return TestResult(*stat_tests.ks_2samp(sample, reference))


def category_counts(values: Any) -> dict[str, int]:
    """Counts of the non-missing ``values``, each as text (as check_data compares them)."""
    series = pd.Series(values, dtype=object).dropna()
    return {str(k): int(v) for k, v in series.astype(str).value_counts().items()}


def chi2_test(sample: Mapping[str, int], reference: Mapping[str, int]) -> TestResult:
    """Chi-square test of homogeneity on the counts of both sides (a category one side lacks
    counts 0 there). A single category in all: nothing can differ (statistic 0, p-value 1).
    ``scipy.stats.chi2_contingency``'s, computed by :mod:`inference.stat_tests`."""
    from inference import stat_tests

    categories = sorted(set(sample) | set(reference))
    if len(categories) < 2:
        return TestResult(0.0, 1.0)
    table = np.array(
        [[sample.get(c, 0), reference.get(c, 0)] for c in categories], dtype=np.float64
    )
    # A category neither side holds (the reference lists every category of the model's
    # domain, seen or not) tells nothing, and would make an expected frequency 0.
    table = table[table.sum(axis=1) > 0]
    if len(table) < 2:
        return TestResult(0.0, 1.0)
    return TestResult(*stat_tests.chi2_contingency(table))


def frame_drift(
    sample: pd.DataFrame, reference: pd.DataFrame, kinds: Mapping[str, str]
) -> dict[str, TestResult]:
    """The drift test of each column of ``kinds`` (``number``, else a category) between two
    frames; a column with no value on one side is not tested."""
    results = {}
    for column, kind in kinds.items():
        a, b = sample[column].dropna(), reference[column].dropna()
        if len(a) == 0 or len(b) == 0:
            continue
        if kind == NUMBER:
            results[column] = ks_test(a, b)
        else:
            results[column] = chi2_test(category_counts(a), category_counts(b))
    return results


def rejected(
    p_values: Mapping[str, float], alpha: float = DEFAULT_ALPHA, correction: str = "bonferroni"
) -> list[str]:
    """The names whose test rejects at family-wise level ``alpha``, smallest p-value first.

    Args:
        p_values: ``{name: p-value}``, the family.
        alpha: family-wise error rate over the family.
        correction: ``bonferroni`` or ``holm`` (step-down, uniformly more powerful).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown multiple-comparison correction {correction!r}")
    m = len(p_values)
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    if correction == "bonferroni":
        return [c for c, p in ordered if p < alpha / m]
    out = []
    for rank, (name, p) in enumerate(ordered):
        if p >= alpha / (m - rank):
            break
        out.append(name)
    return out


# --- the reference a model carries ----------------------------------------------------------


@dataclass
class Distribution:
    """A column's reference distribution: numbers as sorted distinct values and counts,
    categories as counts; how many rows, and the share of them missing."""

    kind: str
    rows: int
    missing: float
    values: np.ndarray | None = None  # numbers: sorted distinct values
    counts: np.ndarray | None = None  # numbers: how often each occurs
    categories: dict[str, int] = field(default_factory=dict)
    # True when the column was too large to keep whole: numbers are a seeded sample of
    # MAX_DISTINCT_NUMBERS values; categories the MAX_CATEGORIES most frequent, and `other`
    # counts the rest.
    reduced: bool = False
    other: int = 0

    @classmethod
    def of(cls, values: Any, kind: str) -> Distribution:
        series = pd.Series(values)
        rows = len(series)
        missing = float(series.isna().mean()) if rows else 0.0
        present = series.dropna()
        if kind == NUMBER:
            numbers = present.to_numpy(dtype=np.float64)
            distinct, counts = np.unique(numbers, return_counts=True)
            reduced = len(distinct) > MAX_DISTINCT_NUMBERS
            if reduced:
                sample = np.random.default_rng(0).choice(numbers, MAX_DISTINCT_NUMBERS, False)
                distinct, counts = np.unique(sample, return_counts=True)
            return cls(NUMBER, rows, missing, distinct, counts.astype(np.int64), reduced=reduced)
        categories = category_counts(present)
        if len(categories) <= MAX_CATEGORIES:
            return cls(CATEGORY, rows, missing, categories=categories)
        ranked = sorted(categories, key=lambda c: (-categories[c], c))
        kept = {c: categories[c] for c in ranked[:MAX_CATEGORIES]}
        other = sum(categories[c] for c in ranked[MAX_CATEGORIES:])
        return cls(CATEGORY, rows, missing, categories=kept, reduced=True, other=other)

    @property
    def present(self) -> int:
        if self.kind == NUMBER:
            return int(self.counts.sum()) if self.counts is not None else 0
        return sum(self.categories.values()) + self.other

    def sample(self) -> np.ndarray:
        """The reference's numbers, sorted (what the KS test needs of them)."""
        return np.repeat(self.values, self.counts)

    @property
    def bounds(self) -> tuple[float, float] | None:
        if self.kind != NUMBER or self.values is None or not len(self.values):
            return None
        return float(self.values[0]), float(self.values[-1])

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "rows": self.rows, "missing": self.missing}
        if self.reduced:
            out["reduced"] = True
        if self.kind == NUMBER:
            bounds = self.bounds
            out["min"], out["max"] = bounds if bounds else (None, None)
            out["distinct"] = int(len(self.values)) if self.values is not None else 0
        else:
            out["categories"] = dict(self.categories)
            if self.reduced:
                out["other"] = self.other
        return out


@dataclass
class Reference:
    """What a served model is monitored against (built at import, ``importers.reference``)."""

    features: dict[str, Distribution]
    prediction: Distribution | None
    alpha: float = DEFAULT_ALPHA
    correction: str = DEFAULT_CORRECTION
    source: str = ""
    predictions_on: str = ""

    def save(self, folder: Path) -> None:
        """``reference.json`` (what it is) and ``reference.npz`` (the numbers, no pickle)."""
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        columns = {}
        for i, (name, dist) in enumerate(self.columns().items()):
            entry = {k: v for k, v in dist.describe().items() if k not in ("min", "max")}
            entry.pop("distinct", None)
            if dist.kind == NUMBER:
                entry["arrays"] = key = f"c{i}"
                arrays[f"{key}_values"] = dist.values
                arrays[f"{key}_counts"] = dist.counts
            columns[name] = entry
        document = {
            "format": REFERENCE_FORMAT,
            "alpha": self.alpha,
            "correction": self.correction,
            "source": self.source,
            "predictions_on": self.predictions_on,
            "features": [n for n in self.features],
            "columns": columns,
        }
        np.savez_compressed(folder / REFERENCE_ARRAYS, **arrays)
        (folder / REFERENCE_JSON).write_text(json.dumps(document, indent=1))

    def columns(self) -> dict[str, Distribution]:
        out = dict(self.features)
        if self.prediction is not None:
            out[PREDICTION] = self.prediction
        return out

    @classmethod
    def load(cls, folder: Path) -> Reference:
        """The reference saved in ``folder``.

        Raises:
            ValueError: Not a reference this code reads (unknown format, missing arrays).
        """
        document = json.loads((folder / REFERENCE_JSON).read_text())
        if document.get("format") != REFERENCE_FORMAT:
            raise ValueError(f"unknown reference format {document.get('format')!r}")
        with np.load(folder / REFERENCE_ARRAYS, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        columns = {}
        for name, entry in document["columns"].items():
            if entry["kind"] == NUMBER:
                key = entry["arrays"]
                columns[name] = Distribution(
                    NUMBER,
                    int(entry["rows"]),
                    float(entry["missing"]),
                    arrays[f"{key}_values"].astype(np.float64),
                    arrays[f"{key}_counts"].astype(np.int64),
                    reduced=bool(entry.get("reduced", False)),
                )
            else:
                categories = {str(k): int(v) for k, v in entry["categories"].items()}
                columns[name] = Distribution(
                    CATEGORY,
                    int(entry["rows"]),
                    float(entry["missing"]),
                    categories=categories,
                    reduced=bool(entry.get("reduced", False)),
                    other=int(entry.get("other", 0)),
                )
        return cls(
            features={n: columns[n] for n in document["features"]},
            prediction=columns.get(PREDICTION),
            alpha=float(document["alpha"]),
            correction=str(document["correction"]),
            source=str(document.get("source", "")),
            predictions_on=str(document.get("predictions_on", "")),
        )

    def describe(self) -> dict[str, Any]:
        """The reference as /monitoring shows it (no arrays)."""
        return {
            "source": self.source,
            "alpha": self.alpha,
            "correction": self.correction,
            "predictions_on": self.predictions_on,
            "features": {n: d.describe() for n, d in self.features.items()},
            "prediction": self.prediction.describe() if self.prediction else None,
        }


def reference_size(folder: Path) -> int:
    """Bytes of the reference's files in ``folder``."""
    return sum((folder / name).stat().st_size for name in (REFERENCE_JSON, REFERENCE_ARRAYS))


# --- testing a window against the reference -------------------------------------------------


def histogram(dist: Distribution, present: np.ndarray) -> dict[str, Any]:
    """Reference and live shares per bin. Numbers: equal bins between the reference's 0.5 %
    and 99.5 % quantiles, plus a bin below and one above them (first and last); categories:
    the reference's most frequent, then "other / unknown"."""
    if dist.kind == NUMBER:
        if dist.values is None or not len(dist.values):
            low, high = 0.0, 1.0
        else:
            cumulative = np.cumsum(dist.counts) / dist.counts.sum()
            low = float(dist.values[np.searchsorted(cumulative, TAIL_SHARE)])
            high = float(
                dist.values[min(np.searchsorted(cumulative, 1 - TAIL_SHARE), len(dist.values) - 1)]
            )
        if high <= low:
            high = low + 1.0
        edges = np.linspace(low, high, HISTOGRAM_BINS + 1)

        def shares(values: np.ndarray, weights: np.ndarray | None) -> list[float]:
            weights = np.ones(len(values)) if weights is None else weights
            total = max(float(weights.sum()), 1.0)
            inside, _ = np.histogram(np.clip(values, low, high), bins=edges, weights=weights)
            below = float(weights[values < low].sum())
            above = float(weights[values > high].sum())
            inside[0] -= below
            inside[-1] -= above
            return [below / total, *(float(c) / total for c in inside), above / total]

        values = dist.values if dist.values is not None else np.array([])
        return {
            "edges": [float(e) for e in edges],
            "reference": shares(values, dist.counts),
            "live": shares(present, None),
        }
    ranked = sorted(dist.categories, key=lambda c: (-dist.categories[c], c))
    shown = ranked[:SHOWN_CATEGORIES]
    live = category_counts(present)
    total_ref, total_live = max(dist.present, 1), max(sum(live.values()), 1)
    other_ref = sum(v for c, v in dist.categories.items() if c not in shown)
    other_live = sum(v for c, v in live.items() if c not in shown)
    return {
        "labels": [*shown, "other / unknown"],
        "reference": [dist.categories[c] / total_ref for c in shown] + [other_ref / total_ref],
        "live": [live.get(c, 0) / total_live for c in shown] + [other_live / total_live],
    }


def column_report(dist: Distribution, values: Any) -> dict[str, Any]:
    """One column of a window against its reference: the drift test and the data quality."""
    values = np.asarray(values)
    rows = len(values)
    missing = missing_mask(values)
    present = values[~missing]
    out: dict[str, Any] = {
        "kind": dist.kind,
        "test": "ks" if dist.kind == NUMBER else "chi2",
        "rows": rows,
        "missing_ratio": float(missing.mean()) if rows else 0.0,
        "reference_missing_ratio": dist.missing,
        "statistic": None,
        "p_value": None,
        "detected": False,
    }
    if dist.kind == NUMBER:
        present = present.astype(np.float64)
        low, high = dist.bounds or (math.inf, -math.inf)
        outside = (present < low) | (present > high)
        out["out_of_range_ratio"] = float(outside.mean()) if len(present) else 0.0
        if len(present) and dist.present:
            result = ks_test(present, dist.sample())
            out["statistic"], out["p_value"] = result.statistic, result.p_value
    else:
        counts = category_counts(present)
        seen = sum(counts.values())
        reference = dist.categories
        if dist.reduced:  # a value outside the kept categories may be a rare known one
            kept = {c: v for c, v in counts.items() if c in reference}
            counts = {**kept, OTHER: seen - sum(kept.values())}
            reference = {**reference, OTHER: dist.other}
            out["unknown_category_ratio"] = None
            out["unknown_categories"] = []
        else:
            unknown = sum(v for c, v in counts.items() if c not in reference)
            out["unknown_category_ratio"] = unknown / seen if seen else 0.0
            out["unknown_categories"] = sorted(c for c in counts if c not in reference)[:10]
        if seen and dist.present:
            result = chi2_test(counts, reference)
            out["statistic"], out["p_value"] = result.statistic, result.p_value
    out["histogram"] = histogram(dist, present)
    return out


def evaluate(
    reference: Reference,
    columns: Mapping[str, Any],
    predictions: Any = None,
    *,
    min_rows: int = 1,
) -> dict[str, Any]:
    """Test a window of rows (``columns``: feature -> values, missing as NaN/None;
    ``predictions``: the model's answer per row, or None) against ``reference``.

    One family, corrected with the reference's ``correction`` at its ``alpha``: every feature
    tested and the prediction. With fewer than ``min_rows`` rows nothing is tested (the data
    quality ratios are still given).

    Returns:
        ``rows``, ``tested``, ``features`` (per feature: ``statistic``, ``p_value``,
        ``detected``, ``missing_ratio``, ``unknown_category_ratio`` or ``out_of_range_ratio``,
        ``histogram``), ``prediction`` (the same, or None), ``drifted`` (names, most
        significant first), ``alpha``, ``correction``.
    """
    rows = len(next(iter(columns.values()))) if columns else 0
    tested = rows >= min_rows and rows > 0
    features = {}
    for name, dist in reference.features.items():
        if name in columns:
            features[name] = column_report(dist, columns[name])
    prediction = None
    if reference.prediction is not None and predictions is not None and len(predictions):
        prediction = answers_report(reference.prediction, predictions)
    family = {**features, **({PREDICTION: prediction} if prediction else {})}
    if not tested:
        for entry in family.values():
            entry["statistic"] = entry["p_value"] = None
    p_values = {n: e["p_value"] for n, e in family.items() if e["p_value"] is not None}
    drifted = rejected(p_values, reference.alpha, reference.correction) if p_values else []
    for name in drifted:
        family[name]["detected"] = True
    return {
        "rows": rows,
        "tested": tested,
        "alpha": reference.alpha,
        "correction": reference.correction,
        "features": features,
        "prediction": prediction,
        "drifted": drifted,
    }


def answers_report(dist: Distribution, predictions: Any) -> dict[str, Any]:
    """A model's answers against the reference's: the drift test and the missing ratio."""
    out = column_report(dist, predictions)
    for key in ("unknown_category_ratio", "unknown_categories", "reference_missing_ratio"):
        out.pop(key, None)
    return out


def prediction_report(
    reference: Reference, predictions: Any, *, min_rows: int = 1
) -> dict[str, Any] | None:
    """Another model's answers (a canary candidate's) tested against the reference's
    predictions on their own: one test at the reference's ``alpha``, outside the live
    model's family. Not tested below ``min_rows`` answers; None without a reference
    prediction or without answers."""
    if reference.prediction is None or predictions is None or not len(predictions):
        return None
    out = answers_report(reference.prediction, predictions)
    out["tested"] = len(predictions) >= min_rows
    if not out["tested"]:
        out["statistic"] = out["p_value"] = None
    out["detected"] = out["p_value"] is not None and out["p_value"] < reference.alpha
    out["alpha"] = reference.alpha
    return out


def frame_columns(frame: pd.DataFrame, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The columns ``names`` of ``frame`` as arrays (what :func:`evaluate` takes)."""
    return {n: frame[n].to_numpy() for n in names if n in frame.columns}
