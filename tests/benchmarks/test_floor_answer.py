"""The benchmark floor's constant answer, in-process: a classifier's floor answers its first
class."""

from __future__ import annotations

from benchmarks.floor_service import constant_prediction
from tests.helpers.factories import bentoml_home
from tests.helpers.service_models import (
    Models,
)


def test_a_classifier_floor_answers_its_first_class(models: Models) -> None:
    from inference.bento import get_model
    from serving.loading import model_contract
    from serving.schema import build_prediction_model

    with bentoml_home(models.bentoml_home):
        contract = model_contract(get_model(models.classifier))
    answer = constant_prediction(contract, build_prediction_model(contract))
    assert contract.classes and answer.prediction == contract.classes[0]
    assert answer.probabilities is None
