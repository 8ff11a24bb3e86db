"""The drift reference at import: what the service monitors its traffic against, computed
once from the model's reference data in the artifact store and saved in the BentoML model
(``monitoring/``, beside ``mlflow_model/``), so a bento and its image carry it and no training
data is needed at serve time.

The reference data is the artifact check_data compares every new data set with
(``checks.drift.reference`` of the model's training config, ``clean_data:reference`` by
default), in the model's own project; the test's level and correction are check_data's too
(``checks.drift.alpha`` and ``correction``; 0.05 and Bonferroni when the model's metadata has
no config). The prediction distribution is the model's predictions on its test data (else on
the reference data). A source without that data (a folder, an MLflow URI, an unreachable W&B
artifact) imports the model unmonitored, with the reason in its metadata (``monitoring``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from importers.sources import Source
from importers.verify import VerifiedModel
from inference import drift
from inference.contract import NUMBER_TYPES, coerce
from inference.errors import one_line

logger = logging.getLogger("tagserve.importers")

DEFAULT_REFERENCE = "clean_data:reference"
# Rows of the reference data the model predicts when it has no test data.
PREDICTION_ROWS = 20_000
MONITORING_METADATA = "monitoring"


def drift_settings(metadata: Mapping[str, Any]) -> tuple[str, float, str]:
    """(reference artifact, alpha, correction) from the model's training config, as
    check_data used them."""
    config = metadata.get("config") if isinstance(metadata.get("config"), Mapping) else {}
    checks = config.get("checks") if isinstance(config.get("checks"), Mapping) else {}
    settings = checks.get("drift") if isinstance(checks.get("drift"), Mapping) else {}
    ref = str(settings.get("reference") or DEFAULT_REFERENCE)
    try:
        alpha = float(settings.get("alpha", drift.DEFAULT_ALPHA))
    except (TypeError, ValueError):
        alpha = drift.DEFAULT_ALPHA
    if not 0 < alpha < 1:
        alpha = drift.DEFAULT_ALPHA
    correction = str(settings.get("correction") or drift.DEFAULT_CORRECTION)
    if correction not in drift.CORRECTIONS:
        correction = drift.DEFAULT_CORRECTION
    return ref, alpha, correction


def read_frame(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def build_reference(
    source: Source,
    verified: VerifiedModel,
    test: pd.DataFrame | None,
    scratch: Path,
    domain: Mapping[str, Any] | None = None,
) -> tuple[Path | None, dict[str, Any]]:
    """Compute the model's reference and save it under ``scratch``. A closed column's
    categories are the model's ``domain`` (``inference.domain``), those the reference data
    lacks counted 0: monitoring's "unknown" categories are then exactly those outside the
    domain, which the service refuses unless TAGSERVE_UNKNOWN_CATEGORIES=accept.

    Returns:
        (the folder to save in the model, or None; the report for the model's metadata:
        ``monitored``, and ``reason`` when not, else ``source``, ``rows``, ``bytes``,
        ``predictions_on``).
    """
    ref_name, alpha, correction = drift_settings(source.metadata)
    try:
        path, where = source.fetch_reference(scratch, ref_name)
    except Exception as exc:  # a source's own failure: import unmonitored, say why
        path, where = None, one_line(exc)
    if path is None:
        return _unmonitored(f"no drift reference: {where}")
    contract = verified.facts.contract
    try:
        data = coerce(read_frame(path), contract)
    except Exception as exc:  # unreadable, or not this model's columns
        return _unmonitored(f"the drift reference {where} does not fit the model: {one_line(exc)}")
    features = {
        c.name: drift.Distribution.of(
            data[c.name], drift.NUMBER if c.type in NUMBER_TYPES else drift.CATEGORY
        )
        for c in contract.columns
    }
    for name, entry in (domain or {}).items():
        if "categories" in entry and name in features and not features[name].reduced:
            known = features[name].categories
            known.update({str(c): 0 for c in entry["categories"] if str(c) not in known})
    prediction, predictions_on = _predictions(verified, test, data)
    reference = drift.Reference(
        features=features,
        prediction=prediction,
        alpha=alpha,
        correction=correction,
        source=where,
        predictions_on=predictions_on,
    )
    folder = scratch / drift.MONITORING_FOLDER
    reference.save(folder)
    report = {
        "monitored": True,
        "source": where,
        "rows": len(data),
        "bytes": drift.reference_size(folder),
        "alpha": alpha,
        "correction": correction,
        "predictions_on": predictions_on,
    }
    return folder, report


def _predictions(
    verified: VerifiedModel, test: pd.DataFrame | None, data: pd.DataFrame
) -> tuple[drift.Distribution | None, str]:
    """The model's prediction distribution: on its test data, else on (a seeded sample of)
    the reference data."""
    frame, on = test, "test_data"
    if frame is None or not len(frame):
        frame, on = data, "reference"
        if len(frame) > PREDICTION_ROWS:
            frame = frame.sample(PREDICTION_ROWS, random_state=0)
    kind = drift.NUMBER if verified.task == "regression" else drift.CATEGORY
    try:
        predicted = np.asarray(verified.pipeline.predict(frame)).ravel()
    except Exception as exc:  # a model that cannot take some reference rows
        logger.warning("no prediction reference: the model failed on %s: %s", on, one_line(exc))
        return None, ""
    return drift.Distribution.of(predicted, kind), on


def _unmonitored(reason: str) -> tuple[None, dict[str, Any]]:
    logger.warning("the model will be served unmonitored: %s", reason)
    return None, {"monitored": False, "reason": reason}
