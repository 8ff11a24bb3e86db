"""Helpers for the client, offline and Spark tests: a real model trained by the pipeline's own
functions on real diamonds, imported by the real importer into a temporary BentoML home, a
real ``bentoml serve`` on 127.0.0.1, and CLI runs in subprocesses (no mocks)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from benchmarks import servers
from benchmarks.servers import Server
from tests.helpers.project import BENTOML_CLI, CONFIG_DIR, PROJECT_ROOT, PYTHON  # noqa: F401

FEATURES: dict[str, Any] = OmegaConf.to_container(
    OmegaConf.load(PROJECT_ROOT / "pipeline" / "conf" / "features" / "diamonds.yaml")
)
# Small but real: enough trees that a multi-threaded sum would change the last bits (which
# the exactness tests would catch), saved with n_jobs=-1 as the pipeline saves it.
REGRESSOR = {
    "estimator": {
        "_target_": "sklearn.ensemble.RandomForestRegressor",
        "n_estimators": 8,
        "max_depth": 10,
        "random_state": 0,
        "n_jobs": -1,
    },
}
FEATURE_COLUMNS = ["carat", "depth", "table", "x", "y", "z", "cut", "color", "clarity"]


def model_diamonds() -> pd.DataFrame:
    """The shipped diamonds the model's domain takes: those the pipeline's own cleaning rules
    and data-check ranges keep (the few impossible ones, a zero size, go)."""
    from pipeline.preprocess import clean
    from tests.helpers.service_models import pipeline_rules

    rules = pipeline_rules("diamonds")
    frame = pd.read_parquet(PROJECT_ROOT / "data" / "diamonds.parquet")
    bounds = {
        **{c: {"min": low, "max": high} for c, (low, high) in rules["checks"]["ranges"].items()},
        **rules["clean"]["bounds"],
    }
    kept, _ = clean(frame, False, [], rules["clean"]["positive"], bounds)
    return kept


def diamonds_sample(n: int, seed: int = 1) -> pd.DataFrame:
    """``n`` real diamonds (features only, within the model's domain) with a text id column
    ``sku``."""
    frame = model_diamonds()
    rows = frame.sample(n=n, random_state=seed, replace=n > len(frame)).reset_index(drop=True)
    rows.insert(0, "sku", [f"sku-{i:06d}" for i in range(n)])
    return rows.drop(columns=["price"])


def train_export(dest: Path, n_train: int = 3000) -> Path:
    """Train with ``pipeline.train.fit`` and export with ``export_model`` (an MLflow folder)."""
    from pipeline.train import export_model, feature_columns, fit
    from tests.helpers.service_models import pipeline_rules

    frame = model_diamonds().sample(n=n_train, random_state=0)
    model, _, _, _ = fit(frame, "price", FEATURES, REGRESSOR, 0.2, 0)
    columns = feature_columns(FEATURES)
    rules = pipeline_rules("diamonds")
    return export_model(model, dest, frame[columns], {"target": "price"}, rules)


def train_penguins(dest: Path) -> Path:
    """A small penguin classifier (text columns with missing values) as an MLflow folder."""
    from pipeline.train import export_model, feature_columns, fit

    features = OmegaConf.to_container(
        OmegaConf.load(PROJECT_ROOT / "pipeline" / "conf" / "features" / "penguins.yaml")
    )
    frame = pd.read_csv(PROJECT_ROOT / "data" / "penguins.csv")
    config = {
        "estimator": {
            "_target_": "sklearn.ensemble.RandomForestClassifier",
            "n_estimators": 5,
            "max_depth": 6,
            "random_state": 0,
            "n_jobs": -1,
        },
    }
    model, _, _, _ = fit(frame, "species", features, config, 0.2, 0, "species")
    columns = feature_columns(features)
    return export_model(model, dest, frame[columns], {"target": "species"})


def build_client_model(root: Path) -> dict[str, Any]:
    """A trained, exported and imported model under ``root`` (the session fixture
    ``client_model`` of tests/conftest.py makes it once): {"model_dir", "env" (with its
    BENTOML_HOME), "tag"}."""
    model_dir = train_export(root / "model")
    env = env_for(root / "bentoml")
    return {"model_dir": model_dir, "env": env, "tag": import_into_bentoml(model_dir, env)}


def native_predictions(model_dir: Path, frame: pd.DataFrame) -> np.ndarray:
    """The reference: the sklearn Pipeline itself, one thread, on the raw frame."""
    from inference.loading import load_pipeline

    model = load_pipeline(model_dir)
    model.set_params(model__n_jobs=1)
    return model.predict(frame[FEATURE_COLUMNS])


def env_for(bentoml_home: Path, **extra: str) -> dict[str, str]:
    """A subprocess environment with its own BentoML home, offline, quiet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTOML_", "WANDB_"))}
    tmp = bentoml_home.parent / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(
        BENTOML_HOME=str(bentoml_home),
        BENTOML_DO_NOT_TRACK="true",
        TMPDIR=str(tmp),
        PYTHONPATH=str(PROJECT_ROOT),
        MLFLOW_TRACKING_URI=f"file://{bentoml_home.parent / 'mlruns'}",
        TAGSERVE_HOME=str(bentoml_home.parent / "tagserve"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def import_into_bentoml(model_dir: Path, env: dict[str, str]) -> str:
    """Import an MLflow folder with the project's importer; return the BentoML tag."""
    done = subprocess.run(
        [PYTHON, "-m", "importers", f"dir:{model_dir}", "--json"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])["tag"]


def run_clients(*args: str, env: dict[str, str], timeout: float = 240, **kw: Any):
    """``python -m clients ARGS`` in a subprocess; returns the CompletedProcess."""
    return subprocess.run(
        [PYTHON, "-m", "clients", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def start_server(
    env: dict[str, str],
    log: Path,
    port: int | None = None,
    service: str | None = None,
    ready_timeout: float = 120,
) -> Server:
    """Start ``bentoml serve`` for the project's service and wait until it is ready."""
    from clients.service import SERVICE_TARGET

    return servers.start_server(
        service or SERVICE_TARGET,
        env=env,
        cwd=PROJECT_ROOT,
        log=log,
        port=port,
        timeout=ready_timeout,
    )


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path, **kw: Any) -> Iterator[Server]:
    server = start_server(env, log, **kw)
    try:
        yield server
    finally:
        server.stop()


def read_output(path: Path) -> pd.DataFrame:
    """An output of the clients (Parquet, CSV with exact floats, JSON lines, Spark folder)."""
    if path.is_dir() or path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, float_precision="round_trip")
    return pd.read_json(path, lines=True, precise_float=True)
