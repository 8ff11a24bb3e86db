"""Pure data-check functions. Each returns a list of problems (empty when the check passes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from pandas.api import types as ptypes

from inference import drift

KINDS = {
    "number": ptypes.is_numeric_dtype,
    "string": lambda s: (
        ptypes.is_object_dtype(s)
        or ptypes.is_string_dtype(s)
        or isinstance(s.dtype, pd.CategoricalDtype)
    ),
}


def check_columns(frame: pd.DataFrame, columns: Mapping[str, str]) -> list[str]:
    """Every expected column is present with the expected kind (number or string)."""
    problems = []
    for column, kind in columns.items():
        if column not in frame.columns:
            problems.append(f"column {column!r} is missing")
        elif not KINDS[kind](frame[column]):
            problems.append(f"column {column!r} should be {kind}, is {frame[column].dtype}")
    return problems


def check_categories(frame: pd.DataFrame, categories: Mapping[str, Sequence[str]]) -> list[str]:
    """Categorical columns hold only allowed values (missing values are allowed)."""
    problems = []
    for column, allowed in categories.items():
        values = frame[column].dropna()
        unknown = sorted(set(values.astype(str)) - set(map(str, allowed)))
        if unknown:
            problems.append(f"column {column!r} has unexpected values {unknown[:5]}")
    return problems


def check_ranges(frame: pd.DataFrame, ranges: Mapping[str, Sequence[float]]) -> list[str]:
    """Numeric columns lie within inclusive ``[min, max]`` (missing values are allowed)."""
    problems = []
    for column, (low, high) in ranges.items():
        values = frame[column].dropna()
        outside = values[(values < low) | (values > high)]
        if len(outside):
            problems.append(
                f"column {column!r} has {len(outside)} value(s) outside [{low}, {high}]"
                f" (min {values.min()}, max {values.max()})"
            )
    return problems


def check_row_count(frame: pd.DataFrame, low: int, high: int) -> list[str]:
    """The number of rows lies within inclusive ``[low, high]``."""
    if low <= len(frame) <= high:
        return []
    return [f"{len(frame)} rows, expected between {low} and {high}"]


def drift_pvalues(sample: pd.DataFrame, reference: pd.DataFrame, columns: Mapping[str, str]):
    """p-value per column that the sample and the reference share a distribution.

    Numbers: two-sample Kolmogorov-Smirnov. Strings: chi-square test of homogeneity on the
    category counts of both frames. The tests are the core's (``inference.drift``), the
    ones the service runs on its traffic.
    """
    return {c: r.p_value for c, r in drift.frame_drift(sample, reference, columns).items()}


def drifted_columns(
    pvalues: Mapping[str, float], alpha: float = 0.05, correction: str = "bonferroni"
) -> list[str]:
    """Columns whose drift test rejects at family-wise level ``alpha`` (``bonferroni`` or
    ``holm``), as ``inference.drift.rejected``."""
    return drift.rejected(pvalues, alpha, correction)


def describe_drift(pvalues: Mapping[str, float], drifted: Sequence[str]) -> list[str]:
    return [f"column {c!r} drifted from the reference (p={pvalues[c]:.2e})" for c in drifted]
