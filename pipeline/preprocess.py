"""Step 2, preprocess: apply the configured cleaning rules and log `clean_data`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from pipeline.download import read_table
from pipeline.errors import PipelineError
from pipeline.tracking import StepContext


def clean(
    frame: pd.DataFrame,
    drop_duplicates: bool = True,
    required: Sequence[str] = (),
    positive: Sequence[str] = (),
    bounds: Mapping[str, Mapping[str, float | None]] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop the rows that break a cleaning rule, counting the drops per rule.

    Rules apply in order (duplicates, required, positive, bounds); a row is counted under
    the first rule it breaks.

    Args:
        frame: raw rows.
        drop_duplicates: drop exact duplicate rows (the first is kept).
        required: columns that must not be missing.
        positive: columns whose value must be > 0 (missing values pass).
        bounds: ``{column: {min, max}}``, inclusive, either side may be null.

    Returns:
        The clean frame (index reset) and ``{rule: rows dropped}``.
    """
    bounds = bounds or {}
    missing = [c for c in [*required, *positive, *bounds] if c not in frame.columns]
    if missing:
        raise PipelineError(f"cleaning rules name missing column(s): {', '.join(missing)}")
    dropped: dict[str, int] = {}

    def keep(rule: str, mask: pd.Series) -> None:
        nonlocal frame
        dropped[rule] = int((~mask).sum())
        frame = frame[mask]

    if drop_duplicates:
        keep("duplicates", ~frame.duplicated())
    for column in required:
        keep(f"required:{column}", frame[column].notna())
    for column in positive:
        keep(f"positive:{column}", ~(frame[column] <= 0))
    for column, bound in bounds.items():
        low, high = bound.get("min"), bound.get("max")
        values = frame[column]
        mask = pd.Series(True, index=frame.index)
        if low is not None:
            mask &= ~(values < low)
        if high is not None:
            mask &= ~(values > high)
        keep(f"bounds:{column}", mask)
    return frame.reset_index(drop=True), dropped


def run(ctx: StepContext) -> None:
    raw = ctx.use(ctx.input_ref("raw_data"))
    frame = read_table(raw.file(), raw.metadata.get("format", "parquet"))
    rules = ctx.cfg.clean
    cleaned, dropped = clean(
        frame,
        drop_duplicates=rules.drop_duplicates,
        required=list(rules.required),
        positive=list(rules.positive),
        bounds={k: dict(v) for k, v in rules.bounds.items()},
    )
    path = ctx.workdir / "clean_data.parquet"
    cleaned.to_parquet(path, index=False)
    metadata = {
        "rows": len(cleaned),
        "rows_in": len(frame),
        "dropped": dropped,
        "lineage": {"raw_data": {"ref": raw.qualified_name, "digest": raw.digest}},
    }
    artifact = ctx.log_artifact(path, "clean_data", "clean_data", metadata)
    ctx.log_metrics({f"preprocess/dropped/{k}": v for k, v in dropped.items()})
    summary = ", ".join(f"{k} {v}" for k, v in dropped.items() if v) or "none"
    print(
        f"preprocess: {len(frame)} -> {len(cleaned)} rows (dropped: {summary})"
        f" -> {artifact.qualified_name}"
    )
