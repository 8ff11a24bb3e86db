"""Step 6, evaluate: score `model_export` on `test_data` and promote it to `prod` if it passes."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from artifacts.store import ArtifactVersion
from inference.model import load_model
from pipeline.errors import PipelineError
from pipeline.tracking import StepContext
from pipeline.train import score


def passes(
    metrics: Mapping[str, float], metric: str, threshold: float, higher_is_better: bool
) -> bool:
    """Whether ``metrics[metric]`` reaches ``threshold`` in the better direction."""
    if metric not in metrics:
        raise PipelineError(f"evaluate.metric {metric!r} is not one of {sorted(metrics)}")
    value = metrics[metric]
    return value >= threshold if higher_is_better else value <= threshold


def beats(
    candidate: Mapping[str, float],
    current: Mapping[str, float] | None,
    metric: str,
    higher_is_better: bool,
) -> bool:
    """Whether the candidate's test metric is at least as good as the current prod's."""
    if not current or metric not in current:
        return True
    better = candidate[metric] >= current[metric]
    return better if higher_is_better else candidate[metric] <= current[metric]


def run(ctx: StepContext) -> None:
    cfg = ctx.cfg.evaluate
    model_ref = ctx.produced.get("model_export", cfg.model)
    export = ctx.use(model_ref)
    test = ctx.use(ctx.input_ref("test_data"))
    frame = pd.read_parquet(test.file())
    model = load_model(export.path)  # as every consumer loads it: the core's trust rules
    target = export.metadata.get("target", ctx.cfg.data.target)
    feature_names = model.contract.features
    missing = [c for c in [*feature_names, target] if c not in frame.columns]
    if missing:
        raise PipelineError(f"{test.qualified_name} lacks column(s): {', '.join(missing)}")
    metrics = score(model.pipeline, frame[feature_names], frame[target])
    ctx.log_metrics({f"test/{k}": v for k, v in metrics.items()})
    # Artifact files are immutable, metadata is not (as in W&B): the test metrics and the
    # test set they came from travel with the model whether or not it becomes prod.
    ctx.store.update_metadata(
        export.qualified_name,
        {"test_metrics": metrics, "test_data": {"ref": test.qualified_name, "digest": test.digest}},
    )
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    if not passes(metrics, cfg.metric, cfg.threshold, cfg.higher_is_better):
        sign = ">=" if cfg.higher_is_better else "<="
        print(
            f"evaluate: {export.qualified_name} test {shown}; "
            f"{cfg.metric} {metrics[cfg.metric]:.4f} "
            f"fails {sign} {cfg.threshold}: prod left unchanged"
        )
        return

    def accept(candidate: ArtifactVersion, current: ArtifactVersion | None) -> bool:
        if not cfg.must_beat_prod or current is None or current.version == candidate.version:
            return True
        return beats(
            metrics, current.metadata.get("test_metrics"), cfg.metric, cfg.higher_is_better
        )

    promoted = ctx.store.promote(export.qualified_name, "prod", accept)
    verdict = (
        "promoted to prod" if promoted else "does not beat the current prod: prod left unchanged"
    )
    print(f"evaluate: {export.qualified_name} test {shown} on {test.qualified_name}: {verdict}")
