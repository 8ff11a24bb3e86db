"""The service's HTTP contract, as ``service.py`` defines it, in one place.

- ``POST /predict``: the body is one record (a JSON object keyed by the signature's column
  names) -> ``{"prediction": ..., "probabilities": {...}}`` (probabilities for classifiers).
- ``POST /predict_batch``: the body is a JSON list of records -> a list of such objects, in
  order (adaptive batching on the server).
- ``GET /metadata``: model tag, task, classes, signature, limits (``max_rows``).

Records are strict on the server (no "1.5" for a number, no 2007.0 for an integer column, no
unknown fields), so rows are cast to the signature's types here before they are sent.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from clients.errors import ClientError
from clients.http import RETRY_STATUSES, Backoff, decode, describe, error_of
from clients.model import PANDAS_DTYPES, Column, ModelInfo, conform

SERVICE_TARGET = "service:Tagserve"  # for `bentoml serve`, from the project root
PREDICT_ROUTE = "/predict"
BATCH_ROUTE = "/predict_batch"
METADATA_ROUTE = "/metadata"
MODEL_ENV = "TAGSERVE_MODEL"  # the model tag the service serves
MAX_LATENCY_ENV = "TAGSERVE_MAX_LATENCY_MS"


@dataclass
class ServiceInfo:
    """What ``GET /metadata`` says about the served model."""

    model: str | None
    info: ModelInfo
    max_rows: int | None = None
    batch_route: str = BATCH_ROUTE

    @property
    def features(self) -> list[str]:
        return self.info.features

    @property
    def dtypes(self) -> dict[str, str]:
        return {c.name: PANDAS_DTYPES.get(c.type, "object") for c in self.info.columns}

    def read_columns(self, id_column: str | None) -> list[str]:
        return [*self.features, *([id_column] if id_column else [])]

    def records(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """The rows of ``frame`` as the JSON records the service accepts (signature types,
        model columns only, missing values as null)."""
        return records_for(conform(frame, self.info), self.info.columns)

    @classmethod
    def from_metadata(cls, meta: Any) -> ServiceInfo:
        try:
            inputs = meta["signature"]["inputs"]
            columns = [Column(c["name"], c["type"], c.get("required", True)) for c in inputs]
        except (KeyError, TypeError) as exc:
            raise ClientError(f"the service's /metadata lacks a signature ({exc})") from exc
        order = meta.get("feature_columns")
        if order and sorted(order) == sorted(c.name for c in columns):
            by_name = {c.name: c for c in columns}
            columns = [by_name[name] for name in order]
        info = ModelInfo(
            path=Path("."),
            ref=str(meta.get("model") or ""),
            columns=columns,
            task=meta.get("task", "regression"),
            classes=meta.get("classes"),
            metadata=meta,
        )
        limits = meta.get("limits") or {}
        return cls(model=meta.get("model"), info=info, max_rows=limits.get("max_rows"))


def records_for(frame: pd.DataFrame, columns: list[Column]) -> list[dict[str, Any]]:
    names = [c.name for c in columns]
    values = [_json_values(frame[c.name], c.type) for c in columns]
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


def _json_values(series: pd.Series, kind: str) -> list[Any]:
    convert = {"long": int, "integer": int, "double": float, "float": float, "boolean": bool}
    to = convert.get(kind)
    out = []
    for v in series.tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif to is not None:
            out.append(to(v))
        else:
            out.append(v)
    return out


def fetch_service_info(url: str, *, timeout: float, backoff: Backoff) -> ServiceInfo:
    """``GET /metadata``, retried like any request (the server may still be starting)."""
    attempt = 0
    with httpx.Client(base_url=url, timeout=timeout) as client:
        while True:
            retry_after = None
            try:
                response = client.get(METADATA_ROUTE)
            except httpx.TransportError as exc:
                problem = f"cannot reach {url}: {describe(exc)}"
            else:
                if response.is_success:
                    return ServiceInfo.from_metadata(decode(response))
                problem = f"{url}{METADATA_ROUTE}: {error_of(response)}"
                if response.status_code not in RETRY_STATUSES:
                    raise ClientError(problem)
                retry_after = response.headers.get("retry-after")
            attempt += 1
            if attempt > backoff.retries:
                raise ClientError(f"{problem} (after {backoff.retries} retries)")
            time.sleep(backoff.delay(attempt, retry_after))


def batch_predictions(body: Any, expected: int) -> list[Any]:
    """The predictions of a ``predict_batch`` answer, checked against the rows sent."""
    if isinstance(body, dict) and "predictions" in body:  # the MLflow protocol's shape
        body = body["predictions"]
    if not isinstance(body, list) or len(body) != expected:
        got = len(body) if isinstance(body, list) else type(body).__name__
        raise ClientError(f"the service answered {got} predictions for {expected} rows")
    return [item["prediction"] if isinstance(item, dict) else item for item in body]
