"""Data sets shaped unlike diamonds, generated (seeded) for the tests: what a user may bring.

Each :class:`Shape` is a frame, its target and the pipeline's feature config for it; the
service tests train a tiny model of each as the pipeline does
(``tests.helpers.service_models.log_trained``), import it and serve it, and hold the service
to its OpenAPI document, BentoML's own clients and strict JSON on every one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

ROWS = 400


@dataclass(frozen=True)
class Shape:
    name: str  # also the model's name in the BentoML store
    frame: pd.DataFrame
    target: str
    features: dict[str, Any]
    classifier: bool = False
    stratify: str | None = None
    integer_columns: list[str] = field(default_factory=list)  # `long` in the signature


def _features(**kinds: Any) -> dict[str, Any]:
    return {
        "numeric": [],
        "categorical": [],
        "ordinal": {},
        "text": None,
        "tfidf_max_features": 20,
        **kinds,
    }


def integers_with_missing(seed: int = 1) -> Shape:
    """Counts, a year and a weight in lbs as integers, two of them with missing values
    (pandas' nullable Int64: MLflow's signature says ``long``, optional), and a category."""
    rng = np.random.default_rng(seed)
    count = pd.array(rng.integers(0, 50, ROWS), dtype="Int64")
    count[rng.random(ROWS) < 0.1] = pd.NA
    weight = pd.array(rng.integers(1500, 5200, ROWS), dtype="Int64")
    weight[rng.random(ROWS) < 0.1] = pd.NA
    frame = pd.DataFrame(
        {
            "count": count,
            "model_year": rng.integers(1970, 1983, ROWS),
            "weight_lbs": weight,
            "origin": rng.choice(["usa", "europe", "japan"], ROWS),
        }
    )
    frame["mpg"] = (
        50.0
        - frame["weight_lbs"].astype("float64").fillna(3000) / 150
        + (frame["model_year"] - 1970) * 0.6
        + rng.normal(0, 1.5, ROWS)
    )
    numeric = ["count", "model_year", "weight_lbs"]
    return Shape(
        "shape-integers",
        frame,
        "mpg",
        _features(numeric=numeric, categorical=["origin"]),
        integer_columns=numeric,
    )


WIDE_NAMES = [
    "sensor 1 (°C)",
    "sensor 2 (°C)",
    "flow rate, l/min",
    "pressure [kPa]",
    "a/b ratio",
    "x.y",
    "rate %",
    "q#1",
    'the "quoted" one',
    "colon: value",
    "semi;colon",
    "dash-ed",
    "plus+one",
    "star*",
    "amp & more",
    "question?",
    "bang!",
    "tilde~",
    "at@home",
    "dollar$",
    "caret^",
    "pipe|bar",
    "back\\slash",
    "braces{}",
    "angle<>",
    "eq=",
    "comma,tail",
    "  leading space",
    "trailing space ",
    "tab\there",
    "ünïcødé",
    "1starts with digit",
]


def wide_named(seed: int = 2) -> Shape:
    """32 numeric columns whose names hold spaces and punctuation (quotes, commas, a tab,
    a backslash, non-ASCII letters), a regression target."""
    rng = np.random.default_rng(seed)
    columns = {name: rng.normal(i, 1 + i / 10, ROWS) for i, name in enumerate(WIDE_NAMES)}
    frame = pd.DataFrame(columns)
    frame["target value"] = frame.iloc[:, :5].sum(axis=1) + rng.normal(0, 0.5, ROWS)
    return Shape("shape-wide", frame, "target value", _features(numeric=list(WIDE_NAMES)))


def binary_labels(seed: int = 3) -> Shape:
    """A binary classifier with string labels ("churned" / "stayed"), numbers with missing
    values and a category with missing values."""
    rng = np.random.default_rng(seed)
    tenure = rng.uniform(0, 72, ROWS)
    charges = rng.uniform(20, 120, ROWS)
    charges[rng.random(ROWS) < 0.08] = np.nan
    plan = rng.choice(["monthly", "yearly", "two-year"], ROWS).astype(object)
    plan[rng.random(ROWS) < 0.05] = None
    churn = (tenure < 20) ^ (rng.random(ROWS) < 0.1)
    frame = pd.DataFrame(
        {
            "tenure": tenure,
            "monthly_charges": charges,
            "plan": plan,
            "label": np.where(churn, "churned", "stayed"),
        }
    )
    return Shape(
        "shape-binary",
        frame,
        "label",
        _features(numeric=["tenure", "monthly_charges"], categorical=["plan"]),
        classifier=True,
        stratify="label",
    )


WORDS = ["great", "poor", "fast", "slow", "broken", "love", "hate", "okay", "cheap", "value"]


def text_column(seed: int = 4) -> Shape:
    """A free-text column (TF-IDF; served by scikit-learn, no fast path) with missing texts,
    beside a number."""
    rng = np.random.default_rng(seed)
    reviews = [" ".join(rng.choice(WORDS, rng.integers(1, 8))) for _ in range(ROWS)]
    text = np.array(reviews, dtype=object)
    text[rng.random(ROWS) < 0.05] = None
    price = rng.uniform(5, 500, ROWS)
    good = np.array([r.count("great") + r.count("love") - r.count("poor") for r in reviews])
    frame = pd.DataFrame({"review": text, "price": price, "rating": good + price / 100})
    return Shape("shape-text", frame, "rating", _features(numeric=["price"], text="review"))


SHAPES = {
    "integers": integers_with_missing,
    "wide": wide_named,
    "binary": binary_labels,
    "text": text_column,
}
