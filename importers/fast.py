"""The exact fast path at import time (``inference.fastpath``): build it, check it against
scikit-learn, bit for bit, on the model's test data, its input example and an edge-case copy
of them (missing values, unknown categories), and save it into the BentoML model only when
it is exact. The check's report goes into the model's metadata (``fast_path``) either way."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from importers.verify import VerifiedModel
from inference import fastpath
from inference.constants import FASTPATH_FOLDER
from inference.contract import coerce
from inference.errors import InputError, one_line

logger = logging.getLogger("tagserve.importers")


def read_test_data(path: Path | None, verified: VerifiedModel) -> pd.DataFrame | None:
    """The model's test data as model input (its signature columns, coerced to their types),
    or None when the source has none or it does not fit the signature."""
    if path is None:
        return None
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        return coerce(frame, verified.facts.contract)
    except (InputError, OSError, ValueError) as exc:
        logger.warning("test data %s not used for the fast path check: %s", path, exc)
        return None


def prepare_fast_path(
    verified: VerifiedModel, test: pd.DataFrame | None, scratch: Path
) -> tuple[Path | None, dict[str, Any]]:
    """Build and check the fast path of ``verified``; save it under ``scratch`` if exact.

    Returns:
        (the saved folder or None, the report): ``engine``, ``exact``, ``rows_checked``,
        ``checked_on`` (rows per frame), ``bulk_rows`` and, when not used, ``reason``.
    """
    example = coerce(verified.example, verified.facts.contract)
    frames = {"input_example": example}
    if test is not None and len(test):
        frames["test_data"] = test
    base = pd.concat(list(frames.values()), ignore_index=True)
    frames["edge_cases"] = fastpath.edge_rows(base)
    try:
        fast, report = fastpath.prepare(
            verified.pipeline, verified.task, list(frames.values()), calibrate_on=base
        )
    except Exception as exc:  # treelite refusing an odd forest: the model still imports
        fast, report = (
            None,
            {
                "engine": fastpath.ENGINE_SKLEARN,
                "exact": False,
                "rows_checked": 0,
                "reason": f"building the fast path failed: {one_line(exc)}",
            },
        )
    report["checked_on"] = {name: len(frame) for name, frame in frames.items()}
    if fast is None:
        logger.warning("no fast path: %s; scikit-learn serves this model", report["reason"])
        return None, report
    folder = scratch / FASTPATH_FOLDER
    fast.save(folder)
    return folder, report
