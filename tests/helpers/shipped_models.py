"""The models the pipeline makes from the shipped data sets, trained for real with the
shipped Hydra config (``python -m pipeline``, ``python -m pipeline experiment=penguins``),
in a temp home with tracking off."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tests.helpers.project import CONFIG_DIR

EXPERIMENTS = {"diamonds": [], "penguins": ["experiment=penguins"]}


@dataclass(frozen=True)
class Shipped:
    """One trained model and the data the pipeline kept for it."""

    name: str
    task: str
    export: Path  # the prod model_export's MLflow folder
    test: pd.DataFrame  # the test split, model columns only
    example: pd.DataFrame  # the model's input example

    def pipeline(self) -> Any:
        from inference.loading import load_pipeline

        return load_pipeline(self.export)


def train_shipped(name: str, home: Path) -> Shipped:
    """Run the pipeline on the shipped data set ``name`` with its shipped config."""
    from hydra import compose, initialize_config_dir

    from artifacts.store import LocalArtifactStore
    from pipeline.run import run
    from pipeline.tracking import store_root

    overrides = [f"main.home={home}", "tracking=disabled", *EXPERIMENTS[name]]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run(cfg)
    store = LocalArtifactStore(store_root(cfg))
    prod = store.get("model_export:prod")
    spec = json.loads((prod.path / "input_example.json").read_text())
    test = pd.read_parquet(store.get("test_data:latest").file())[spec["columns"]]
    return Shipped(
        name=name,
        task=str(prod.metadata["task"]),
        export=prod.path,
        test=test.reset_index(drop=True),
        example=pd.DataFrame(spec["data"], columns=spec["columns"]),
    )
