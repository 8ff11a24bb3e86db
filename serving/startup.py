"""The service's start: what it serves, settled once in ``bentoml serve`` before any worker
starts (:func:`plan_service`), and each worker's start (:func:`start_worker`)."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
from pydantic import BaseModel

from inference.bento import get_model
from inference.constants import FASTPATH_METADATA
from inference.contract import Contract
from inference.errors import TagserveError
from serving import bentoml_private
from serving.candidates import checked_candidate
from serving.loading import load_served, model_contract
from serving.model_choice import ModelChoice
from serving.schema import build_prediction_model, build_record_model
from serving.settings import Settings, source_revision
from serving.state import ServiceState

logger = logging.getLogger("bentoml.service.tagserve")

# The tracked objects a worker allocates between two young-generation collections: room for
# the rows of a few concurrent large requests (CPython's default: 700).
YOUNG_OBJECTS = 50_000


@dataclass(frozen=True)
class ServicePlan:
    """What a service serves: the live model (exact tag, contract), the candidate's model of
    the store (None without one), the settings, the code's revision, the record and answer
    types made from the contract, and the ``/docs.json`` body."""

    settings: Settings
    model_tag: str
    contract: Contract
    revision: Mapping[str, str]
    candidate: Any
    record_type: type[BaseModel]
    prediction_type: type[BaseModel]
    openapi_body: bytes = b""

    @property
    def candidate_tag(self) -> str:
        return str(self.candidate.tag) if self.candidate is not None else ""

    def labels(self) -> dict[str, str]:
        """The service's BentoML labels: the model's exact tag, artifact and the code's."""
        meta = self.contract.metadata
        artifact = meta.get("artifact_qualified_name") or meta.get("artifact") or ""
        return {"model_tag": self.model_tag, "artifact": str(artifact), **self.revision}


def plan_service(settings: Settings | None = None) -> ServicePlan:
    """The plan for ``settings.model`` (default: from the environment and the bento
    arguments); its exact tags and code revision are recorded as bento arguments."""
    args = bentoml_private.arguments()
    settings = settings or Settings.from_env(args)
    try:
        live = get_model(settings.model)
    except TagserveError as exc:
        raise bentoml.exceptions.NotFound(str(exc)) from None
    # The model's domain, refused outside or accepted as TAGSERVE_UNKNOWN_CATEGORIES and
    # TAGSERVE_OUT_OF_RANGE say: every route validates through this contract.
    model_tag = str(live.tag)
    contract = model_contract(live).enforcing(settings.domain_policy)
    settings = settings.with_body_cap(len(contract.columns))
    imported = (live.info.metadata.get(FASTPATH_METADATA) or {}).get("engine", "sklearn")
    settings = settings.for_engine(compiled=imported != "sklearn")
    revision = source_revision(args)
    # Checked here, in `bentoml serve` itself, before any worker starts: refused in one line.
    candidate = checked_candidate(settings.candidate, model_tag, contract, model_contract)
    plan = ServicePlan(
        settings,
        model_tag,
        contract,
        revision,
        candidate,
        build_record_model(contract),
        build_prediction_model(contract),
    )
    bentoml_private.record_arguments(
        {"model": model_tag, "candidate": plan.candidate_tag or None, **revision}
    )
    return plan


def pandas_without_arrow() -> None:
    """Run this worker's pandas as if pyarrow were not installed (unless pandas is already
    imported).

    pandas imports pyarrow whenever it is installed, only to know which Arrow-backed types it
    may offer; a worker uses none of them (it reads JSON and CSV bodies into NumPy-backed
    frames), and pyarrow's libraries would stay resident in every replica. pyarrow stays
    unimportable in the worker afterwards, so that pandas' view of it holds: Parquet or an
    Arrow dtype asked of pandas here fails with pandas' own "missing optional dependency"."""
    if "pandas" not in sys.modules:
        sys.modules.setdefault("pyarrow", None)  # type: ignore[arg-type]


def start_worker(plan: ServicePlan, live_model: Any, candidate_model: Any) -> ServiceState:
    """Load the models (``live_model``, ``candidate_model``: the service's BentoML models)
    and start the background parts in this worker: its :class:`ServiceState`."""
    pandas_without_arrow()
    live = load_served(live_model, plan.contract)
    logger.info("serving %s (%s) on %s", plan.model_tag, plan.contract.task, live.engine)
    # Imported here, in a worker: `bentoml serve` itself has no use for it (nor for pandas).
    from serving.monitoring import Monitor, shared_folder

    candidate = None
    if candidate_model is not None:
        candidate = load_served(candidate_model, model_contract(plan.candidate))
        logger.info("candidate %s on %s", plan.candidate_tag, candidate.engine)
    models = ModelChoice(
        live,
        plan.model_tag,
        candidate,
        plan.candidate_tag,
        shadow_fraction=plan.settings.shadow_fraction,
        share_folder=shared_folder(plan.settings.monitor_dir),
    )
    # Live monitoring (serving.monitoring): every route records its rows and predictions.
    monitor = Monitor.for_model(Path(live_model.path), plan.settings)
    monitor.start()
    # What start-up made (modules, the models, compiled code) lives as long as the worker:
    # moved out of the collector's generations, a full collection (which the many objects
    # of a large JSON body trigger) no longer walks it, request after request.
    gc.freeze()
    # A JSON body's rows are containers the collector tracks (a list or dict each), alive
    # until the request ends, when their counts free them: collected every 700 of them (the
    # default), a large body was walked many times over while it was read
    # (docs/benchmarks.md). Reference cycles still go at this count.
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])
    return ServiceState(
        plan.settings,
        plan.contract,
        models,
        monitor,
        plan.revision,
        plan.openapi_body,
        candidate_meta=dict(plan.candidate.info.metadata) if candidate is not None else None,
    )
