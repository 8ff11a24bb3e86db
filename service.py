"""tagserve's BentoML service: the imported prod model behind typed, validated HTTP APIs.

``POST /predict``: one record (typed by the model's MLflow signature) -> its prediction (and
class probabilities); ``POST /predict_batch``: records -> their predictions, in order, with
adaptive batching; ``/metadata``: what the service runs. The other routes are
``serving.routes``'; a request meets ``serving.middleware`` first; every handler reads the
worker's ``serving.state.ServiceState``.

``bentoml serve service:Tagserve`` builds the service for the configured model
(``serving.settings.Settings``); :func:`create_service` builds one for any imported model.
Importing this module does nothing else. A bento ships this file with the ``inference`` and
``serving`` packages, and nothing more from the project.
"""

# No `from __future__ import annotations`: BentoML reads the API annotations as objects, and
# the record types are made per service inside typed_apis.
from dataclasses import replace
from typing import Annotated, Any

import bentoml
import orjson
from pydantic import Field

from serving import bentoml_private, middleware, routes
from serving.batching import INPUT_FAULTS, batchable_api, described, predict_merged
from serving.drain import on_arbiter_stop
from serving.openapi import allowed_methods, service_document
from serving.schema import Metadata
from serving.settings import Settings
from serving.startup import ServicePlan, plan_service, start_worker

# Before anything imports prometheus_client: this server's own metrics and monitoring folder
# (servers sharing a BentoML home would otherwise wipe each other's).
bentoml_private.own_metrics_folder()

NAME = "tagserve"
DESCRIPTION = (
    "The tagserve model. MLflow clients: POST /invocations (dataframe_split, dataframe_records, "
    "instances, inputs; or text/csv) -> {predictions: [...]}; GET /metadata."
)


class ServedModel:
    """What every ``Tagserve`` does whatever its model: a worker's start, adaptive batches and
    ``/metadata``. ``create_service`` makes the class with the model's own types."""

    plan: ServicePlan
    bento_model: Any
    candidate_model: Any = None
    Prediction: Any

    def __init__(self) -> None:
        self.state = start_worker(self.plan, self.bento_model, self.candidate_model)

    def predict_merged(self, records: list[Any], choice: str) -> list[Any]:
        """The records of merged requests on the model route ``choice``: one prediction (a
        dict) each; a failing model call is split, so only the request(s) it fails on fail
        (``serving.batching``)."""
        return predict_merged(self.state, records, choice)

    @bentoml.api(route=routes.METADATA)
    def metadata(self) -> Metadata:
        """The model (tag, artifact, version, digest, signature, metrics) and the code
        (bento, git tag and commit) this service runs. Also ``GET /metadata``."""
        return self.state.describe()


def typed_apis(plan: ServicePlan) -> dict[str, Any]:
    """The APIs typed by the model's contract: ``predict``, and the batchable ones (the hidden
    ones only with a candidate), by name."""
    Record, Prediction = plan.record_type, plan.prediction_type  # noqa: N806

    @bentoml.api(route=routes.PREDICT)
    async def predict(self: ServedModel, record: Record, /) -> Prediction:
        """One record -> its prediction (and class probabilities for a classifier)."""
        # async: the model call is short and runs on the event loop, not in a worker thread
        # that would fight the loop for the GIL while it refuses excess requests.
        row = record.model_dump(by_alias=True)
        try:
            (predicted,) = self.state.models.predict_records([row])
        except INPUT_FAULTS as exc:  # a record the model cannot take: 400, not a 500
            raise bentoml.exceptions.InvalidArgument(
                f"invalid input: the model cannot take this record ({described(exc)})"
            ) from None
        self.state.monitor.record([row], [predicted])
        return Prediction(**predicted)

    records = Annotated[list[Record], Field(min_length=1, max_length=plan.settings.max_rows)]
    apis = {"predict": predict}
    for path, choice, doc in routes.BATCH_APIS if plan.candidate_tag else routes.BATCH_APIS[:1]:
        api = batchable_api(
            path, choice, doc, records, Prediction, contract=plan.contract, settings=plan.settings
        )
        apis[api.name] = api
    return apis


def create_service(settings: Settings | None = None) -> Any:
    """The ``Tagserve`` service for ``settings.model`` (default: from the environment and the
    bento arguments), whose exact tag and code revision are recorded as bento arguments."""
    planned = plan_service(settings)
    apis = dict(sorted({"metadata": ServedModel.metadata, **typed_apis(planned)}.items()))
    document = service_document(
        NAME,
        apis,
        planned.contract,
        planned.record_type,
        planned.prediction_type,
        max_rows=planned.settings.max_rows,
        version=planned.model_tag,
    )
    planned = replace(planned, openapi_body=orjson.dumps(document))

    @bentoml.asgi_app(routes.protocol_app(), path="/")
    @bentoml.service(
        name=NAME,
        description=DESCRIPTION,
        workers=planned.settings.workers,
        threads=planned.settings.batch_calls,  # the batchable APIs' calls run in these threads
        traffic={"timeout": 60},
        labels=planned.labels(),
    )
    class Tagserve(ServedModel):
        """Serves one imported model (see the module docstring)."""

        plan, Record, Prediction = planned, planned.record_type, planned.prediction_type
        bento_model = bentoml.models.BentoModel(planned.model_tag)
        if planned.candidate_tag:
            candidate_model = bentoml.models.BentoModel(planned.candidate_tag)
            predict_batch_candidate = apis["predict_batch_candidate"]
            predict_batch_shadowed = apis["predict_batch_shadowed"]
        predict, predict_batch = apis["predict"], apis["predict_batch"]

    # Graceful drain: the arbiter holds new connections before it stops the workers
    # (serving.drain; the workers' half is serving.middleware.DrainMiddleware).
    bentoml_private.before_arbiter_stops(on_arbiter_stop)
    routing = {"live": planned.model_tag, "candidate": planned.candidate_tag}
    middleware.install(Tagserve, planned.settings, allowed_methods(document), routing)
    # A request is never split, so never cut; a batch starts when one of the calls is free.
    bentoml_private.whole_requests_batching(planned.settings.batch_calls)
    bentoml_private.batch_checked_rows()
    bentoml_private.bound_apis_once()
    return Tagserve


def __getattr__(name: str) -> Any:
    """``service:Tagserve`` (``bentoml serve``, ``bentoml build``): built on first use."""
    if name == "Tagserve":
        globals()["Tagserve"] = service = create_service()
        return service
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
