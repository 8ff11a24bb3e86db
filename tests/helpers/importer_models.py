"""Helpers for the importer tests: real models from the pipeline's own train/export functions
on tiny data, a real local artifact store, a per-test BentoML home, and the one fake allowed
(the W&B network service, at ``wandb.Api``)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from artifacts.store import ArtifactVersion, LocalArtifactStore
from pipeline.train import export_model, feature_columns, fit
from tests.helpers.factories import bentoml_home  # noqa: F401  (re-exported for the importer tests)
from tests.helpers.factories import synthetic_diamonds as diamonds
from tests.helpers.project import BENTOML_CLI, CONFIG_DIR, PROJECT_ROOT, PYTHON  # noqa: F401

# The real diamonds feature config; the forest is tiny (the machine is shared).
FEATURES: dict[str, Any] = OmegaConf.to_container(
    OmegaConf.load(CONFIG_DIR / "features" / "diamonds.yaml")
)
REGRESSOR = {
    "estimator": {
        "_target_": "sklearn.ensemble.RandomForestRegressor",
        "n_estimators": 5,
        "max_depth": 4,
        "random_state": 0,
        "n_jobs": 1,
    },
}
CLASSIFIER = {
    "estimator": {
        "_target_": "sklearn.ensemble.RandomForestClassifier",
        "n_estimators": 5,
        "max_depth": 4,
        "random_state": 0,
        "n_jobs": 1,
    },
}
ARTIFACT_METADATA = {
    "task": "regression",
    "target": "price",
    "val_metrics": {"r2": 0.91, "mae": 120.5, "rmse": 150.25},
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "run_id": "train-1234abcd",
    "lineage": {
        "raw_data": {"ref": "raw_data:v0", "digest": "a" * 64},
        "clean_data": {"ref": "clean_data:v0", "digest": "b" * 64},
        "trainval_data": {"ref": "trainval_data:v0", "digest": "c" * 64},
    },
}
TEST_METADATA = {
    "test_metrics": {"r2": 0.9, "mae": 125.0, "rmse": 160.0},
    "test_data": {"ref": "test_data:v0", "digest": "d" * 64},
}


def train_export(dest: Path, *, seed: int = 0, classifier: bool = False) -> Path:
    """Train with ``pipeline.train.fit`` and export with ``export_model`` into ``dest``."""
    frame = diamonds(seed=seed)
    target, model_cfg, stratify = "price", REGRESSOR, None
    if classifier:
        frame = frame.assign(size=np.where(frame.carat > 1.2, "big", "small"))
        target, model_cfg, stratify = "size", CLASSIFIER, "size"
    model, _, _, _ = fit(frame, target, FEATURES, model_cfg, 0.25, seed, stratify)
    return export_model(model, dest, frame[feature_columns(FEATURES)], {"target": target})


def log_prod(
    store_root: Path, export: Path, metadata: dict[str, Any] | None = None
) -> ArtifactVersion:
    """Log ``export`` as the next ``model_export`` version, evaluated and aliased ``prod``,
    as the pipeline's train and evaluate steps do."""
    store = LocalArtifactStore(store_root)
    version = store.log_artifact(
        export,
        "model_export",
        "model_export",
        metadata or ARTIFACT_METADATA,
        run_id=(metadata or ARTIFACT_METADATA).get("run_id"),
    )
    store.update_metadata(version.qualified_name, TEST_METADATA)
    return store.set_alias(version.qualified_name, "prod")


def writable_copy(src: Path, dst: Path) -> Path:
    """A copy of a model folder whose files can be edited (store files are read-only)."""
    shutil.copytree(src, dst)
    for file in dst.rglob("*"):
        file.chmod(file.stat().st_mode | stat.S_IWUSR)
    return dst


def subprocess_env(bentoml_dir: Path, tagserve_home: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: their own BentoML and pipeline homes, no W&B key,
    and a temp folder of their own (BentoML stages a model in TMPDIR; a killed import's copy
    stays there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "BENTOML_"))}
    tmp = bentoml_dir.parent / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(
        TMPDIR=str(tmp),
        BENTOML_HOME=str(bentoml_dir),
        BENTOML_DO_NOT_TRACK="true",
        TAGSERVE_HOME=str(tagserve_home),
        PYTHONPATH=str(PROJECT_ROOT),
    )
    return env


def run_importer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "importers", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


class FakeWandbArtifact:
    """What the importer reads of a ``wandb.Artifact``; ``download`` copies a real folder."""

    def __init__(
        self,
        files: Path,
        *,
        entity: str,
        project: str,
        version: str,
        aliases: list[str],
        metadata: dict[str, Any],
    ):
        self._files = files
        self.version = version
        self.name = f"model_export:{version}"
        self.type = "model_export"
        self.qualified_name = f"{entity}/{project}/{self.name}"
        self.digest = "f" * 32  # W&B's manifest digest: another algorithm than ours
        self.aliases = list(aliases)
        self.metadata = dict(metadata)
        self.downloads: list[str] = []

    def download(self, root: str | None = None, **_: Any) -> str:
        self.downloads.append(str(root))
        shutil.copytree(self._files, root, dirs_exist_ok=True)
        return str(root)


def fake_wandb_api(artifacts: dict[str, Any]) -> type:
    """A ``wandb.Api`` stand-in serving ``artifacts`` by full path ``entity/project/name:alias``.

    Unknown paths raise what the real SDK raises for them (``Api.artifact`` wraps the
    ValueError of a missing membership into a ``CommError``).
    """
    from wandb.errors import CommError

    class FakeApi:
        requested: list[str] = []

        def __init__(self, *args: Any, **kwargs: Any):
            pass

        def artifact(self, name: str, type: str | None = None) -> Any:
            FakeApi.requested.append(name)
            if name in artifacts:
                found = artifacts[name]
                if isinstance(found, Exception):
                    raise found
                return found
            entity_project, _, membership = name.rpartition("/")
            cause = ValueError(
                f"artifact membership {membership!r} not found in {entity_project!r}"
            )
            raise CommError(str(cause), cause)

    return FakeApi
