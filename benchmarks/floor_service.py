"""The framework floor of the serving benchmark: ``bentoml serve benchmarks.floor_service:Floor``.

A BentoML service as trivial as one can be with tagserve's API: ``POST /predict`` takes the
same ``Record`` (built from the same model contract by ``serving.schema``, so BentoML parses
and validates exactly the same body) and answers a constant ``Prediction``, with no model
call. It runs with the same settings (``TAGSERVE_MODEL`` for the contract, ``TAGSERVE_WORKERS``)
and is served the same way, so ``our /predict latency / the floor's`` is the cost of
everything tagserve adds to BentoML: the model call, building its input frame and answer,
the middleware and the mounted MLflow routes.
"""

# No `from __future__ import annotations`: BentoML reads the API annotations as objects.
from typing import Any

import bentoml
from pydantic import BaseModel

from inference.bento import get_model
from inference.contract import Contract
from inference.errors import TagserveError
from serving.schema import build_prediction_model, build_record_model
from serving.settings import Settings


def constant_prediction(contract: Contract, prediction_model: type[BaseModel]) -> BaseModel:
    """The one answer the floor gives: a valid ``Prediction`` for ``contract``'s task (the
    first class for a classifier, 0.0 for a regressor)."""
    if contract.task == "classification":
        return prediction_model(prediction=(contract.classes or ["?"])[0])
    return prediction_model(prediction=0.0)


def create_floor_service(settings: Settings | None = None) -> Any:
    """The floor service for ``settings.model``'s contract (default: from the environment)."""
    from serving.loading import model_contract  # the service's own reading of a model

    settings = settings or Settings.from_env()
    try:
        contract = model_contract(get_model(settings.model))
    except TagserveError as exc:
        raise bentoml.exceptions.NotFound(str(exc)) from None
    Record = build_record_model(contract)
    Prediction = build_prediction_model(contract)
    constant = constant_prediction(contract, Prediction)

    @bentoml.service(name="tagserve-floor", workers=settings.workers, traffic={"timeout": 60})
    class Floor:
        """Parses a record, answers a constant: BentoML's own cost per request."""

        @bentoml.api
        def predict(self, record: Record, /) -> Prediction:
            return constant

    return Floor


def __getattr__(name: str) -> Any:
    """``benchmarks.floor_service:Floor`` (``bentoml serve``): built on first use."""
    if name == "Floor":
        globals()["Floor"] = floor = create_floor_service()
        return floor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
