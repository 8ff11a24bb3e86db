"""Run the configured steps in order (the pure core behind `python -m pipeline`)."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Sequence

from omegaconf import DictConfig

from pipeline import STEPS
from pipeline.errors import PipelineError
from pipeline.tracking import step_context


def selected_steps(steps: str | Sequence[str]) -> list[str]:
    """Parse ``main.steps``: ``all``, a comma list or a list of step names, in pipeline order."""
    if isinstance(steps, str):
        if steps.strip() == "all":
            return list(STEPS)
        steps = steps.split(",")
    wanted = [str(s).strip() for s in steps if str(s).strip()]
    unknown = [s for s in wanted if s not in STEPS]
    if unknown or not wanted:
        raise PipelineError(
            f"unknown step(s) {', '.join(unknown) or repr(steps)}: "
            f"choose from all, {', '.join(STEPS)}"
        )
    return [s for s in STEPS if s in wanted]


def run(cfg: DictConfig) -> dict[str, str]:
    """Run the steps ``cfg.main.steps`` names; return the artifact versions they produced."""
    steps = selected_steps(cfg.main.steps)
    group = f"pipeline-{uuid.uuid4().hex[:8]}"
    produced: dict[str, str] = {}
    for step in steps:
        module = importlib.import_module(f"pipeline.{step}")
        with step_context(cfg, step, group, produced) as ctx:
            module.run(ctx)
    return produced
