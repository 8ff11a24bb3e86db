"""Helpers for the service and release tests.

Real models, made the way the pipeline makes them (``pipeline.train.fit`` and
``export_model`` on small samples of the shipped data, logged to a local artifact store
and aliased ``prod``), imported by the real importer into a BentoML home of the test
session; the service module loaded in-process for a given model; a real ``bentoml serve``
subprocess.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from benchmarks.servers import BENTOML_CLI, free_port, serving  # noqa: F401  (re-exported)
from tests.helpers.factories import bentoml_home
from tests.helpers.project import CONFIG_DIR, PROJECT_ROOT, PYTHON, VENV_BIN  # noqa: F401

REGRESSOR_NAME = "tagserve-diamonds"  # the importer's default model name
CLASSIFIER_NAME = "tagserve-penguins"
TINY_FOREST = {"n_estimators": 5, "max_depth": 6, "random_state": 0, "n_jobs": 1}


def features(name: str) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "features" / f"{name}.yaml"))


def diamonds_sample(n: int = 600) -> pd.DataFrame:
    return pd.read_parquet(PROJECT_ROOT / "data" / "diamonds.parquet").sample(n, random_state=0)


def diamond_records(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """Distinct diamonds as JSON records of the regressor's features (plain Python values)."""
    import json

    frame = diamonds_sample(600).drop(columns=["price"]).sample(n, random_state=seed)
    return json.loads(frame.to_json(orient="records"))


def penguins() -> pd.DataFrame:
    """The shipped penguins (with their missing values: optional signature columns)."""
    return pd.read_csv(PROJECT_ROOT / "data" / "penguins.csv")


def train_and_log(
    home: Path,
    project: str,
    *,
    classifier: bool,
    seed: int = 0,
    frame: pd.DataFrame | None = None,
    with_rules: bool = True,
) -> str:
    """Fit and export a tiny model of the shipped data (penguins for a classifier, diamonds or
    ``frame`` for a regressor) as the pipeline does: :func:`log_trained`, with the shipped
    config's rules (its domain's bounds) unless not ``with_rules``."""
    if classifier:
        frame, target, feats, stratify = penguins(), "species", features("penguins"), "species"
    else:
        frame = diamonds_sample() if frame is None else frame
        target, feats, stratify = "price", features("diamonds"), None
    return log_trained(
        home,
        project,
        frame,
        target,
        feats,
        classifier=classifier,
        seed=seed,
        stratify=stratify,
        rules=pipeline_rules("penguins" if classifier else "diamonds") if with_rules else None,
    )


def pipeline_rules(name: str) -> dict[str, Any]:
    """The shipped config's cleaning rules and data checks of data set ``name`` (composed as
    the pipeline composes them: the checks' categories interpolate the features)."""
    config = OmegaConf.create(
        {
            "features": OmegaConf.load(CONFIG_DIR / "features" / f"{name}.yaml"),
            "clean": OmegaConf.load(CONFIG_DIR / "clean" / f"{name}.yaml"),
            "checks": OmegaConf.load(CONFIG_DIR / "checks" / f"{name}.yaml"),
        }
    )
    container = OmegaConf.to_container(config, resolve=True)
    return {"clean": container["clean"], "checks": container["checks"]}


def log_trained(
    home: Path,
    project: str,
    frame: pd.DataFrame,
    target: str,
    feats: dict[str, Any],
    *,
    classifier: bool,
    seed: int = 0,
    stratify: str | None = None,
    rules: dict[str, Any] | None = None,
) -> str:
    """Fit and export a tiny model of ``frame`` as the pipeline does (``pipeline.train.fit``
    and ``export_model``), log it as the next ``model_export`` of ``project`` in the local
    store under ``home``, evaluated and aliased ``prod``. Returns the artifact version."""
    from artifacts.store import LocalArtifactStore
    from pipeline.train import export_model, feature_columns, fit

    estimator = "sklearn.ensemble.RandomForest" + ("Classifier" if classifier else "Regressor")
    model_cfg = {"estimator": {"_target_": estimator, **TINY_FOREST, "random_state": seed}}
    model, val_metrics, _, _ = fit(frame, target, feats, model_cfg, 0.2, seed, stratify)
    export = home / "exports" / f"{project}-{seed}"
    export.parent.mkdir(parents=True, exist_ok=True)
    export_model(model, export, frame[feature_columns(feats)], {"target": target}, rules)
    store = LocalArtifactStore(home / "store" / project)
    version = store.log_artifact(
        export,
        "model_export",
        "model_export",
        {
            "task": "classification" if classifier else "regression",
            "target": target,
            "val_metrics": val_metrics,
            "git_commit": "0" * 40,
            "run_id": f"test-{project}-{seed}",
            "lineage": {"raw_data": {"ref": "raw_data:v0", "digest": "a" * 64}},
        },
        run_id=f"test-{project}-{seed}",
    )
    store.update_metadata(version.qualified_name, {"test_metrics": val_metrics})
    store.set_alias(version.qualified_name, "prod")
    return version.version


def import_prod(project: str, *, home: Path, name: str) -> str:
    """``importers.import_model`` of ``project``'s ``model_export:prod`` (inside
    :func:`bentoml_home`). Returns the BentoML tag."""
    from importers import import_model

    return import_model(f"local:{project}/model_export:prod", name=name, home=home).tag


@dataclass(frozen=True)
class Models:
    """What the service tests share: a BentoML home holding a regressor and a classifier."""

    bentoml_home: Path
    tagserve_home: Path
    regressor: str  # BentoML tag
    classifier: str

    def mlflow_folder(self, tag: str) -> Path:
        name, version = tag.split(":")
        return self.bentoml_home / "models" / name / version / "mlflow_model"

    def example(self, tag: str) -> dict[str, Any]:
        """The model's own serving_input_example.json."""
        import json

        return json.loads((self.mlflow_folder(tag) / "serving_input_example.json").read_text())


def build_models(root: Path) -> Models:
    """A regressor and a classifier, trained, logged and imported under ``root`` (the
    session fixture ``models`` of tests/conftest.py makes them once per session)."""
    tagserve_home, home = root / "tagserve", root / "bentoml"
    train_and_log(tagserve_home, REGRESSOR_NAME, classifier=False)
    train_and_log(tagserve_home, CLASSIFIER_NAME, classifier=True)
    with bentoml_home(home):
        regressor = import_prod(REGRESSOR_NAME, home=tagserve_home, name=REGRESSOR_NAME)
        classifier = import_prod(CLASSIFIER_NAME, home=tagserve_home, name=CLASSIFIER_NAME)
    return Models(home, tagserve_home, regressor, classifier)


# A regressor whose `depth` barely varies (spread 1e-10 around 0): its scaler divides by that
# spread, so a depth within every input bound (1e29) leaves float32 after scaling and the
# model call raises. The real failure the service's last line of defence is for.
FRAGILE_NAME = "tagserve-fragile"
FRAGILE_DEPTH = 1e29


def fragile_model(models: Models) -> str:
    """The fragile regressor, trained, logged and imported into ``models``' BentoML home (the
    session fixture ``fragile`` makes it once): its BentoML tag."""
    frame = diamonds_sample()
    frame["depth"] = np.random.default_rng(0).normal(0.0, 1e-10, len(frame))
    # Without the shipped rules: its depths break them, and no bound may stop the value first.
    train_and_log(
        models.tagserve_home, FRAGILE_NAME, classifier=False, frame=frame, with_rules=False
    )
    with bentoml_home(models.bentoml_home):
        return import_prod(FRAGILE_NAME, home=models.tagserve_home, name=FRAGILE_NAME)


@dataclass(frozen=True)
class BuiltService:
    """A service built in-process for one model: the BentoML service and its record type."""

    Tagserve: Any
    Record: Any


def load_service(tag: str, **settings: Any) -> BuiltService:
    """``service.create_service`` for the model ``tag`` (call inside :func:`bentoml_home`),
    other settings from the environment (``TAGSERVE_*``) unless given."""
    import service
    from serving import bentoml_private
    from serving.settings import Settings

    bentoml_private.reset_arguments()  # the bento arguments a previous service recorded
    try:
        built = service.create_service(Settings.from_env({"model": tag}))
    finally:
        bentoml_private.reset_arguments()
    return BuiltService(built, built.inner.Record)


def subprocess_env(models: Models, **extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: the session's BentoML home, the project importable,
    no configuration leaking in from the caller's shell."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BENTOML_", "TAGSERVE_", "WANDB_", "MLFLOW_"))
    }
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        BENTOML_HOME=str(models.bentoml_home),
        BENTOML_DO_NOT_TRACK="true",
        TAGSERVE_HOME=str(models.tagserve_home),
        PYTHONPATH=str(PROJECT_ROOT),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def bentoml_server(
    target: str, *, env: dict[str, str], cwd: Path, log: Path, timeout: float = 180
) -> Iterator[str]:
    """``bentoml serve TARGET`` on 127.0.0.1 and a free port; yields its URL once /readyz
    answers 200; stops it and its workers afterwards."""
    with serving(target, env=env, cwd=cwd, log=log, timeout=timeout) as server:
        yield server.url


def records(example: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of an MLflow ``dataframe_split`` example as records."""
    split = example["dataframe_split"]
    return [dict(zip(split["columns"], row, strict=True)) for row in split["data"]]
