"""Run tracking (W&B, offline by default) and the artifact store each step talks to."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from artifacts.store import ArtifactStore, ArtifactVersion, LocalArtifactStore, WandbArtifactStore
from pipeline.errors import PipelineError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class StepContext:
    """What one step of one pipeline invocation works with."""

    cfg: DictConfig
    store: ArtifactStore
    run: Any  # a wandb Run, or None when tracking is disabled
    run_id: str
    workdir: Path
    # Exact versions produced earlier in this invocation, so that a downstream step uses
    # its own upstream output even when a parallel sweep job moved `latest` meanwhile.
    produced: dict[str, str] = field(default_factory=dict)

    def input_ref(self, name: str, default_selector: str = "latest") -> str:
        return self.produced.get(name, f"{name}:{default_selector}")

    def use(self, ref: str) -> ArtifactVersion:
        return self.store.use(ref, run_id=self.run_id)

    def log_artifact(
        self, path: Path, name: str, type: str, metadata: dict[str, Any]
    ) -> ArtifactVersion:
        version = self.store.log_artifact(path, name, type, metadata, run_id=self.run_id)
        self.produced[name] = version.qualified_name
        return version

    def log_metrics(self, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log(metrics)
            self.run.summary.update(metrics)


def home_dir(cfg: DictConfig) -> Path:
    return Path(cfg.main.home).expanduser().resolve()


def store_root(cfg: DictConfig) -> Path:
    """The local artifact store of this configuration's project."""
    return home_dir(cfg) / "store" / cfg.main.project


def wants_wandb_store(cfg: DictConfig) -> bool:
    backend = cfg.tracking.store
    if backend not in ("auto", "local", "wandb"):
        raise PipelineError(f"tracking.store must be auto, local or wandb, not {backend!r}")
    online = cfg.tracking.mode == "online"
    if backend == "wandb" and not online:
        raise PipelineError("tracking.store=wandb needs tracking.mode=online")
    has_key = bool(os.environ.get("WANDB_API_KEY")) or Path("~/.netrc").expanduser().exists()
    return backend == "wandb" or (backend == "auto" and online and has_key)


@contextlib.contextmanager
def step_context(
    cfg: DictConfig, step: str, group: str, produced: dict[str, str]
) -> Iterator[StepContext]:
    """Start a W&B run for ``step`` (one run per step, grouped per invocation)."""
    home = home_dir(cfg)
    mode = cfg.tracking.mode
    if mode not in ("offline", "online", "disabled"):
        raise PipelineError(f"tracking.mode must be offline, online or disabled, not {mode!r}")
    workdir = home / "work" / f"{step}-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True, exist_ok=True)
    run = None
    if mode != "disabled":
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        (home / "wandb").mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=cfg.main.project,
            entity=cfg.tracking.entity,
            job_type=step,
            group=group,
            mode=mode,
            dir=str(home),
            config=wandb_config(cfg),
            reinit="create_new",
        )
    run_id = run.id if run is not None else f"{step}-{uuid.uuid4().hex[:8]}"
    if wants_wandb_store(cfg):
        store: ArtifactStore = WandbArtifactStore(run, home / "downloads")
    else:
        store = LocalArtifactStore(store_root(cfg))
    ctx = StepContext(cfg, store, run, run_id, workdir, produced)
    try:
        yield ctx
    except BaseException:
        if run is not None:
            run.finish(exit_code=1)
        raise
    else:
        if run is not None:
            run.finish()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def wandb_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's configuration as W&B records it: resolved, ``data.url`` without credentials."""
    from artifacts.urls import redact_url

    config = OmegaConf.to_container(cfg, resolve=True)
    data = config.get("data") if isinstance(config, dict) else None
    if isinstance(data, dict) and isinstance(data.get("url"), str):
        data["url"] = redact_url(data["url"])
    return config


def git_commit(path: Path = PROJECT_ROOT) -> str | None:
    """The commit of the code that runs (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()
