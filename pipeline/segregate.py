"""Step 4, segregate: split `clean_data` into `trainval_data` and `test_data`."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline.errors import PipelineError
from pipeline.tracking import StepContext


def split(
    frame: pd.DataFrame, test_size: float, seed: int, stratify: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into (trainval, test), reproducibly.

    Args:
        frame: clean rows.
        test_size: share of rows (0..1) for the test set.
        seed: random seed.
        stratify: a column whose class shares both parts keep, or None.
    """
    if not 0 < test_size < 1:
        raise PipelineError(f"split.test_size must be between 0 and 1, not {test_size}")
    if stratify is not None and stratify not in frame.columns:
        raise PipelineError(f"split.stratify column {stratify!r} is not in the data")
    try:
        trainval, test = train_test_split(
            frame,
            test_size=test_size,
            random_state=seed,
            stratify=frame[stratify] if stratify else None,
        )
    except ValueError as exc:
        raise PipelineError(f"cannot split {len(frame)} rows: {exc}") from exc
    return trainval.reset_index(drop=True), test.reset_index(drop=True)


def run(ctx: StepContext) -> None:
    clean = ctx.use(ctx.input_ref("clean_data"))
    cfg = ctx.cfg.split
    trainval, test = split(pd.read_parquet(clean.file()), cfg.test_size, cfg.seed, cfg.stratify)
    lineage = dict(clean.metadata.get("lineage", {}))
    lineage["clean_data"] = {"ref": clean.qualified_name, "digest": clean.digest}
    refs = []
    for name, part in (("trainval_data", trainval), ("test_data", test)):
        path = ctx.workdir / f"{name}.parquet"
        part.to_parquet(path, index=False)
        metadata = {
            "rows": len(part),
            "seed": cfg.seed,
            "stratify": cfg.stratify,
            "lineage": lineage,
        }
        refs.append(ctx.log_artifact(path, name, name, metadata).qualified_name)
    print(
        f"segregate: {len(trainval) + len(test)} rows -> "
        f"{refs[0]} ({len(trainval)}), {refs[1]} ({len(test)})"
    )
