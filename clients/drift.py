"""``python -m clients drift FILE --model TAG``: the live monitoring's tests on a file.

The file's rows (CSV, Parquet or JSON lines, read as ``score`` reads them and coerced to the
model's contract) and the model's predictions on them are tested against the drift reference
the importer saved in the BentoML model, with the same code as the service
(``inference.drift.evaluate``) and written as the same report page
(``inference.drift_report``): for batch scoring users, or to look at a day's traffic.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from clients.errors import ClientError
from clients.io import iter_chunks
from clients.model import ModelInfo, OfflineModel, coerced, resolve
from inference import drift
from inference.domain import Policy
from inference.drift_report import p_value, render
from inference.files import write_atomically

CHUNK_ROWS = 100_000


def reference_of(info: ModelInfo, tag: str) -> drift.Reference:
    """The drift reference saved in the BentoML model of ``info``."""
    folder = info.path.parent / drift.MONITORING_FOLDER
    if not (folder / drift.REFERENCE_JSON).is_file():
        raise ClientError(
            f"model {tag} has no drift reference (imported without one: its metadata's "
            "`monitoring` says why); import it from an artifact store holding "
            "clean_data:reference"
        )
    try:
        return drift.Reference.load(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise ClientError(f"model {tag}: unreadable drift reference: {exc}") from None


def drift_of_file(path: str, tag: str) -> dict[str, Any]:
    """The monitoring status (as ``GET /monitoring`` gives it) of the rows of ``path``."""
    info = resolve(tag, None)
    # Every row is tested, inside the model's domain or not: values outside it are among
    # what a drift test is there to show (as the service's monitoring counts them).
    info.contract = info.contract.enforcing(Policy(False, False))
    info.domain_from_pipeline = False
    reference = reference_of(info, tag)
    chunks = list(iter_chunks(path, CHUNK_ROWS, columns=info.features, dtypes=info.dtypes))
    if not chunks or not sum(len(c) for c in chunks):
        raise ClientError(f"{path} holds no rows")
    frame = coerced(pd.concat(chunks), info.contract)
    predictions = OfflineModel(info).predict(frame)
    result = drift.evaluate(reference, drift.frame_columns(frame, info.features), predictions)
    return {
        "enabled": True,
        "file": str(path),
        "model": tag,
        "evaluated_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "window": {"rows": len(frame), "size": len(frame), "min_rows": 1},
        **result,
        "reference": reference.describe(),
    }


def write_report(status: dict[str, Any], output: str) -> None:
    """The report page, written whole or not at all (``inference.files.write_atomically``)."""
    target = Path(output)
    if not target.parent.is_dir():
        raise ClientError(f"cannot write {output}: folder {target.parent} does not exist")
    page = render(status, model=str(status.get("model", "")))
    write_atomically(target, lambda out: out.write(page.encode("utf-8")))


def p_phrase(value: float | None) -> str:
    """``p=0.0012``, or ``p < 1e-300`` for one below what a float holds (the report's form)."""
    text = p_value(value)
    return f"p {text}" if text.startswith("<") else f"p={text}"


def summary_line(status: dict[str, Any]) -> str:
    drifted = status["drifted"]
    family = {**status["features"], "prediction": status.get("prediction") or {}}
    shown = ", ".join(f"{n} ({p_phrase(family[n]['p_value'])})" for n in drifted)
    verdict = f"drift in {shown}" if drifted else "no drift"
    return (
        f"drift: {status['rows']} rows of {status['file']} against "
        f"{status['reference']['source'] or 'the reference'}: {verdict} "
        f"({status['correction']}, alpha {status['alpha']})"
    )


def cmd_drift(args: Any) -> int:
    status = drift_of_file(args.input, args.model)
    if args.report:
        write_report(status, args.report)
    print(json.dumps(status) if args.json else summary_line(status))
    return 0
