"""The shadow and the canary in-process: the choice of the route, a slow candidate that never
delays the live answer, a classifier candidate compared by agreement."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import numpy as np
import pandas as pd

from inference.loading import load_pipeline
from serving.metrics import shadow_metrics
from serving.model_choice import ModelChoice
from serving.routing import CANDIDATE, SHADOWED, canary_share, choose
from serving.shadow import Shadow
from tests.helpers.candidates import (
    loaded,
)
from tests.helpers.service_models import (
    Models,
)


def test_choice_of_the_route() -> None:
    rng = random.Random(0)
    assert {choose(0, 0, None, rng) for _ in range(100)} == {"live"}
    assert {choose(0, 1, None, rng) for _ in range(100)} == {SHADOWED}
    assert {choose(100, 1, None, rng) for _ in range(100)} == {CANDIDATE}
    key = b"a-client"
    assert len({choose(50, 0, key, random.Random(i)) for i in range(50)}) == 1  # stable
    shares = [canary_share(f"k{i}".encode()) for i in range(10_000)]
    assert min(shares) >= 0 and max(shares) < 100
    assert 9 < sum(s < 10 for s in shares) / 100 < 11


class BlockedCandidate:
    """A test double of the candidate's scorer: blocks until released (a slow candidate)."""

    def __init__(self, live: Any) -> None:
        self.live = live
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict_records(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.entered.set()
        assert self.release.wait(60)
        return self.live.predict_records(rows)


def test_a_slow_candidate_never_delays_the_live_answer_and_drops_are_counted(
    models: Models, candidate_rows: list[dict[str, Any]], both: dict
) -> None:
    rows = candidate_rows
    live = loaded(models, models.regressor)
    slow = BlockedCandidate(live)
    choice = ModelChoice(live, models.regressor, slow, "slow:v1", shadow_fraction=1.0)
    # A small queue, so that the drops are seen with a few calls.
    choice.shadow = shadow = Shadow(
        choice.candidate_predictions,
        "regression",
        shadow_metrics("regression"),
        tag="slow:v1",
        maxsize=4,
    )
    dropped_metric = shadow_metrics("regression").dropped.labels(reason="queue_full")
    dropped_before = dropped_metric._value.get()
    answers: list[Any] = []

    def serve() -> None:
        answers.append(choice.predict_records(rows[:1], SHADOWED))
        assert slow.entered.wait(60)  # the candidate is now stuck on the first call
        for row in rows[1:11]:
            answers.append(choice.predict_records([row], SHADOWED))

    worker = threading.Thread(target=serve)
    worker.start()
    worker.join(30)  # the live path never waits for the candidate: it returns while blocked
    stuck = worker.is_alive()
    slow.release.set()
    assert not stuck, "a live answer waited for the slow candidate"
    assert [a[0]["prediction"] for a in answers] == both["live"][:11]
    # 1 being scored, 4 queued, 6 dropped and counted.
    assert (shadow.offered, shadow.dropped) == (11, 6)
    assert dropped_metric._value.get() - dropped_before == 6
    assert shadow.wait()
    assert shadow.scored == 5


def test_a_classifier_candidate_is_compared_by_agreement(
    models: Models, classifier_candidate: str
) -> None:
    """The shadow of a classifier: agreement counted per row as the offline comparison counts
    it, the live answers (with probabilities) unchanged."""
    from tests.helpers.service_models import penguins

    features = [c.name for c in loaded(models, models.classifier).contract.columns]
    rows = json.loads(penguins()[features].head(60).to_json(orient="records"))
    live, candidate = loaded(models, models.classifier), loaded(models, classifier_candidate)
    metrics = shadow_metrics("classification")
    choice = ModelChoice(live, models.classifier, candidate, classifier_candidate)
    choice.shadow = shadow = Shadow(
        choice.candidate_predictions,
        "classification",
        metrics,
        tag=classifier_candidate,
        gather_s=0,
    )
    agreed_before, rows_before = metrics.agreed._value.get(), metrics.rows._value.get()
    answers = [choice.predict_records([row], SHADOWED)[0] for row in rows]
    assert answers == live.predict_records(rows)  # probabilities included
    assert shadow.wait()
    # Agreement by hand: scikit-learn's labels of both models, row by row.
    frame = pd.DataFrame.from_records(rows).replace({None: np.nan})
    labels = [
        load_pipeline(models.mlflow_folder(t)).predict(frame).tolist()
        for t in (models.classifier, classifier_candidate)
    ]
    agreed = sum(x == y for x, y in zip(*labels, strict=True))
    assert [a["prediction"] for a in answers] == labels[0]
    assert shadow.comparison.figures() == {
        "task": "classification",
        "rows": len(rows),
        "agreed": agreed,
        "agreement_ratio": agreed / len(rows),
    }
    assert metrics.rows._value.get() - rows_before == len(rows)
    assert metrics.agreed._value.get() - agreed_before == agreed
    assert 0 < agreed < len(rows)  # the candidate differs, and not everywhere
    assert metrics.agreement._value.get() == agreed / len(rows)
