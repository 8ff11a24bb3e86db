"""A model that scikit-learn serves (a free-text column: TF-IDF, which the fast path does not
cover), for the scenario where adaptive batching pays: generated reviews (seeded), trained
and exported as an MLflow model the way the pipeline exports one (skops, signature, input
example, pinned requirements), then imported by the real importer.

Built here and not by the pipeline: tools outside ``pipeline/`` import nothing from it.
"""

from __future__ import annotations

import logging
import warnings
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pandas as pd

WORDS = ["great", "poor", "fast", "slow", "broken", "love", "hate", "okay", "cheap", "value"]
ROWS = 4000
TEXT = "review"


def reviews(rows: int = ROWS, seed: int = 4) -> pd.DataFrame:
    """Reviews of 1 to 12 words, some missing, a price, and a rating to learn."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, rng.integers(1, 13))) for _ in range(rows)]
    good = np.array([t.count("great") + t.count("love") - t.count("poor") for t in texts])
    review = np.array(texts, dtype=object)
    review[rng.random(rows) < 0.05] = None
    price = rng.uniform(5, 500, rows)
    rating = good + price / 100 + rng.normal(0, 0.3, rows)
    return pd.DataFrame({TEXT: review, "price": price, "rating": rating})


def build(folder: Path, seed: int = 0) -> Path:
    """Train the text model on :func:`reviews` and export it to ``folder`` (must not exist)."""
    import mlflow.sklearn
    import skops.io
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from inference import strict_json
    from inference.constants import INPUT_EXAMPLE, RUNTIME_REQUIREMENTS, SERVING_EXAMPLE

    frame = reviews()
    X, y = frame[[TEXT, "price"]], frame["rating"]
    text = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="")),
            ("impute_none", SimpleImputer(missing_values=None, strategy="constant", fill_value="")),
            ("flatten", FunctionTransformer(np.ravel, feature_names_out="one-to-one")),
            ("tfidf", TfidfVectorizer(max_features=50)),
        ]
    )
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    prep = ColumnTransformer([("numeric", numeric, ["price"]), ("text", text, [TEXT])])
    forest = RandomForestRegressor(n_estimators=50, max_depth=14, random_state=seed, n_jobs=1)
    model = Pipeline([("preprocess", prep), ("model", forest)]).fit(X, y)
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    example = X.head(3)
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(X, model.predict(X.head(100)))
    mlflow.sklearn.save_model(
        model,
        str(folder),
        signature=signature,
        input_example=example,
        pip_requirements=[f"{n}=={importlib_metadata.version(n)}" for n in RUNTIME_REQUIREMENTS],
        skops_trusted_types=trusted,
        metadata={
            "task": "regression",
            "target": "rating",
            "feature_columns": list(X.columns),
            "example_predictions": model.predict(example).tolist(),
        },
    )
    strict_json.rewrite(folder / INPUT_EXAMPLE)  # MLflow writes a missing value as NaN
    strict_json.rewrite(folder / SERVING_EXAMPLE, indent=2)
    return folder


def record(seed: int = 9) -> dict[str, object]:
    """One review as a JSON record (a body for /predict)."""
    row = reviews(1, seed).iloc[0]
    return {TEXT: row[TEXT] or "okay", "price": float(row["price"])}
