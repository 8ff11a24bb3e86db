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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from clients.errors import ClientError
from clients.http import RETRY_STATUSES, Backoff, Retries, decode, describe, error_of
from clients.model import ModelInfo, coerced
from inference.constants import MODEL_ENV  # noqa: F401  (the model tag the service serves)
from inference.contract import Contract, contract_from_signature, json_records
from inference.domain import REFUSE, Policy
from inference.errors import ModelRefused

SERVICE_TARGET = "service:Tagserve"  # for `bentoml serve`, from the project root
PREDICT_ROUTE = "/predict"
BATCH_ROUTE = "/predict_batch"
METADATA_ROUTE = "/metadata"
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
        return self.info.dtypes

    def read_columns(self, id_column: str | None) -> list[str]:
        return [*self.features, *([id_column] if id_column else [])]

    def records(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """The rows of ``frame`` as the JSON records the service accepts (signature types,
        model columns only, missing values as null)."""
        return json_records(coerced(frame, self.info.contract), self.info.contract)

    @classmethod
    def from_metadata(cls, meta: Any) -> ServiceInfo:
        try:
            contract = service_contract(meta)
        except (KeyError, TypeError) as exc:
            raise ClientError(f"the service's /metadata lacks a signature ({exc})") from exc
        except ModelRefused as exc:
            raise ClientError(f"the service's /metadata: {exc}") from None
        info = ModelInfo(path=Path("."), ref=str(meta.get("model") or ""), contract=contract)
        limits = meta.get("limits") or {}
        return cls(model=meta.get("model"), info=info, max_rows=limits.get("max_rows"))


def service_contract(meta: Any) -> Contract:
    """The contract a service's ``/metadata`` describes, with its domain enforced as that
    service enforces it (``domain``: ``columns`` and ``enforced``): a file's row outside it is
    refused here, named by its row in the file, before any request."""
    domain = meta.get("domain") if isinstance(meta.get("domain"), dict) else {}
    enforced = domain.get("enforced") if isinstance(domain.get("enforced"), dict) else {}
    columns = domain.get("columns") if isinstance(domain.get("columns"), dict) else {}
    contract = contract_from_signature(meta["signature"]["inputs"], {**meta, "domain": columns})
    policy = Policy(
        enforced.get("unknown_categories") == REFUSE, enforced.get("out_of_range") == REFUSE
    )
    return contract.enforcing(policy)


def fetch_service_info(url: str, *, timeout: float, backoff: Backoff) -> ServiceInfo:
    """``GET /metadata``, retried like any request (the server may still be starting)."""
    retrying = Retries(backoff)
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
            delay = retrying.next_delay(retry_after)
            if delay is None:
                raise ClientError(retrying.gave_up(problem))
            time.sleep(delay)


def batch_predictions(body: Any, expected: int) -> list[Any]:
    """The predictions of a ``predict_batch`` answer, checked against the rows sent."""
    if isinstance(body, dict) and "predictions" in body:  # the MLflow protocol's shape
        body = body["predictions"]
    if not isinstance(body, list) or len(body) != expected:
        got = len(body) if isinstance(body, list) else type(body).__name__
        raise ClientError(f"the service answered {got} predictions for {expected} rows")
    return [item["prediction"] if isinstance(item, dict) else item for item in body]
