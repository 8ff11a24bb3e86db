"""The rows MLServer's codec encodes for the V2 tests (``benchmarks/mlserver/encode_requests.py``):
``python -m tests.helpers.mlserver_rows FOLDER`` writes, for each generated data shape
(``tests.helpers.shapes``) and the shipped diamonds and penguins, distinct rows of the model's
input columns as ``<key>.parquet`` (pandas' dtypes kept: the codec types tensors by them)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from tests.helpers.service_models import diamonds_sample, features, penguins
from tests.helpers.shapes import SHAPES

ROWS = 40
SEED = 24


def feature_columns(feats: dict[str, Any]) -> list[str]:
    """The model's input columns, as the pipeline's feature config lists them."""
    text = [feats["text"]] if feats.get("text") else []
    return [*feats["numeric"], *feats["categorical"], *feats["ordinal"], *text]


def frames() -> dict[str, pd.DataFrame]:
    """Seeded distinct rows of each data set, its input columns only."""
    out = {}
    for key, make in SHAPES.items():
        shape = make()
        out[key] = shape.frame[feature_columns(shape.features)]
    out["diamonds"] = diamonds_sample(600)[feature_columns(features("diamonds"))]
    out["penguins"] = penguins()[feature_columns(features("penguins"))]
    return {
        key: frame.sample(ROWS, random_state=SEED).reset_index(drop=True)
        for key, frame in out.items()
    }


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for key, frame in frames().items():
        frame.to_parquet(folder / f"{key}.parquet")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
