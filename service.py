"""tagserve's BentoML service: the imported prod model behind typed, validated HTTP APIs.

- ``POST /predict``: one record (its fields and types come from the model's MLflow signature)
  -> the prediction, and the class probabilities for a classifier. No batching.
- ``POST /predict_batch``: a list of records -> a list of predictions, in order. Adaptive
  batching merges concurrent requests into one model call.
- ``POST /invocations``: the MLflow scoring protocol (``serving.protocol``): clients of
  ``mlflow models serve`` work unchanged.
- ``GET|POST /metadata``: model tag, artifact, version, digest, git tag and commit, signature,
  metrics. ``/livez``, ``/readyz``, ``/healthz``, ``/metrics`` as BentoML provides them, and
  MLflow's ``GET /ping``, ``/health``, ``/version``.

Every API predicts through ``inference.model.LoadedModel``: on the model's exact fast path
(``inference.fastpath``) when the importer proved it bit-exact and the start-up check on the
input example agrees, else with the sklearn Pipeline; ``/metadata`` says which (``engine``).

``bentoml serve service:Tagserve`` builds the service for the configured model
(``serving.settings.Settings``: ``TAGSERVE_MODEL``, or the bento argument ``model``, which a
built bento carries); :func:`create_service` builds one for any imported model. Importing this
module does nothing else. A bento ships this file with the ``inference`` and ``serving``
packages, and nothing more from the project.
"""

# No `from __future__ import annotations`: BentoML reads the API annotations as objects, and
# the record types are made per service inside create_service.
import contextlib
import logging
from pathlib import Path
from typing import Annotated, Any

import bentoml
import orjson
from pydantic import Field

from inference.bento import fastpath_folder, get_model, mlflow_folder
from inference.constants import FASTPATH_METADATA, MLFLOW_FOLDER, SERVING_EXAMPLE
from inference.contract import Contract, contract_from_signature
from inference.errors import InputError, TagserveError
from inference.model import load_model
from serving import bentoml_private, middleware
from serving.batching import INPUT_FAULTS, answer_each, build_answers_output, described
from serving.candidates import (
    BATCH_ROUTES,
    CANDIDATE,
    LIVE,
    SHADOWED,
    CandidateRefused,
    ModelChoice,
    check_candidate,
    describe_candidate,
)
from serving.drain import on_arbiter_stop
from serving.http import protocol_app
from serving.monitoring import Monitor
from serving.openapi import allowed_methods, service_document
from serving.protocol import example_frame
from serving.schema import (
    Metadata,
    build_prediction_model,
    build_record_model,
    build_records_input,
)
from serving.settings import Settings, source_revision
from serving.whole_answers import WholeAnswers

logger = logging.getLogger("bentoml.service.tagserve")
# Before anything imports prometheus_client: this server's metrics and monitoring folder.
bentoml_private.own_metrics_folder()


def model_contract(model: bentoml.Model) -> Contract:
    """The contract of an imported model: the importer's metadata, else the MLmodel file."""
    meta = dict(model.info.metadata)
    if "signature" not in meta or "task" not in meta:
        from inference.contract import read_mlmodel, signature_of

        mlmodel = read_mlmodel(mlflow_folder(model))
        meta.setdefault("signature", signature_of(mlmodel))
        for key, value in (mlmodel.get("metadata") or {}).items():
            meta.setdefault(key, value)
    return contract_from_signature((meta.get("signature") or {}).get("inputs"), meta)


def create_service(settings: Settings | None = None) -> Any:
    """The ``Tagserve`` service for ``settings.model`` (default: from the environment and the
    bento arguments), whose exact tag and code revision are recorded as bento arguments."""
    args = bentoml_private.arguments()
    settings = settings or Settings.from_env(args)
    try:
        bento_model = get_model(settings.model)
    except TagserveError as exc:
        raise bentoml.exceptions.NotFound(str(exc)) from None
    model_tag = str(bento_model.tag)
    contract = model_contract(bento_model)
    settings = settings.with_body_cap(len(contract.columns))
    revision = source_revision(args)
    # issue 17: the candidate, checked here (in `bentoml serve` itself): refused in one line.
    candidate_bento, candidate_tag = None, ""
    if settings.candidate:
        try:
            candidate_bento = check_candidate(
                settings.candidate, model_tag, contract, model_contract
            )
        except CandidateRefused as exc:
            raise bentoml.exceptions.BentoMLConfigException(str(exc)) from None
        candidate_tag = str(candidate_bento.tag)
    bentoml_private.record_arguments(
        {"model": model_tag, "candidate": candidate_tag or None, **revision}
    )
    Record = build_record_model(contract)
    Prediction = build_prediction_model(contract)
    Records = Annotated[list[Record], Field(min_length=1, max_length=settings.max_rows)]
    meta = contract.metadata

    @bentoml.asgi_app(protocol_app(), path="/")
    @bentoml.service(
        name="tagserve",
        description=(
            "The tagserve model. MLflow clients: POST /invocations (dataframe_split, "
            "dataframe_records, instances, inputs; or text/csv) -> {predictions: [...]}; "
            "GET /metadata."
        ),
        workers=settings.workers,
        traffic={"timeout": 60},
        labels={
            "model_tag": model_tag,
            "artifact": str(meta.get("artifact_qualified_name") or meta.get("artifact") or ""),
            "git_commit": revision["git_commit"],
            "git_tag": revision["git_tag"],
        },
    )
    class Tagserve:
        """Serves one imported model (see the module docstring)."""

        bento_model = bentoml.models.BentoModel(model_tag)
        candidate_model = bentoml.models.BentoModel(candidate_tag) if candidate_tag else None

        def __init__(self) -> None:
            self.settings = settings
            self.contract = contract
            folder = Path(self.bento_model.path_of(MLFLOW_FOLDER))
            # The fast path only if the import proved it exact; load_model re-checks it on the
            # input example and falls back to sklearn (with a warning) if it differs.
            self.model = load_model(folder, contract, fastpath_folder(self.bento_model))
            self.batch_calls = self.batch_rows = 0
            with contextlib.suppress(OSError, InputError):
                # fail now rather than on the first request
                self.model.predict(example_frame((folder / SERVING_EXAMPLE).read_bytes(), contract))
            logger.info("serving %s (%s) on %s", model_tag, contract.task, self.model.engine)
            self.candidate = None  # issue 17: the candidate, by the same loader
            if candidate_tag:
                self.candidate = load_model(
                    Path(self.candidate_model.path_of(MLFLOW_FOLDER)),
                    model_contract(candidate_bento),
                    fastpath_folder(self.candidate_model),
                )
                logger.info("candidate %s on %s", candidate_tag, self.candidate.engine)
            self.models = ModelChoice(
                self.model,
                model_tag,
                self.candidate,
                candidate_tag,
                shadow_fraction=settings.shadow_fraction,
            )
            # Live monitoring (serving.monitoring): every route records its rows and answers.
            self.monitor = Monitor.for_model(Path(self.bento_model.path), settings)
            self.monitor.start()

        @bentoml.api
        async def predict(self, record: Record, /) -> Prediction:
            """One record -> its prediction (and class probabilities for a classifier)."""
            # async: the model call (~0.05 ms on the fast path, ~3 ms on sklearn) runs on the
            # event loop, not in a worker thread that would fight the loop for the GIL (under
            # load shedding the loop is busy refusing requests, and a threaded call then took
            # tens of milliseconds).
            row = record.model_dump(by_alias=True)
            try:
                (answer,) = self.models.answer_records([row])
            except INPUT_FAULTS as exc:  # a record the model cannot take: 400, not a 500
                raise bentoml.exceptions.InvalidArgument(
                    f"invalid input: the model cannot take this record ({described(exc)})"
                ) from None
            self.monitor.record([row], [answer])
            return Prediction(**answer)

        @bentoml.api(
            batchable=True,
            max_batch_size=settings.max_batch_size,
            max_latency_ms=settings.max_latency_ms,
            input_spec=build_records_input(Records),
            output_spec=build_answers_output(list[Prediction]),
        )
        def predict_batch(self, records: Records, /) -> list[Prediction]:
            """A list of records -> their predictions, in order. Concurrent requests are
            merged into one model call (adaptive batching)."""
            return self.answer_batch(records, LIVE)

        if candidate_tag:  # issue 17: hidden APIs of the canary and shadowed /predict_batch

            @bentoml.api(
                route=BATCH_ROUTES[CANDIDATE],
                batchable=True,
                max_batch_size=settings.max_batch_size,
                max_latency_ms=settings.max_latency_ms,
                input_spec=build_records_input(Records),
                output_spec=build_answers_output(list[Prediction]),
            )
            def predict_batch_candidate(self, records: Records, /) -> list[Prediction]:
                """/predict_batch requests the canary gives to the candidate."""
                return self.answer_batch(records, CANDIDATE)

            @bentoml.api(
                route=BATCH_ROUTES[SHADOWED],
                batchable=True,
                max_batch_size=settings.max_batch_size,
                max_latency_ms=settings.max_latency_ms,
                input_spec=build_records_input(Records),
                output_spec=build_answers_output(list[Prediction]),
            )
            def predict_batch_shadowed(self, records: Records, /) -> list[Prediction]:
                """/predict_batch requests the live model answers and the candidate shadows."""
                return self.answer_batch(records, SHADOWED)

        def answer_batch(self, records: list[Any], route: str) -> list[Prediction]:
            self.batch_calls += 1
            self.batch_rows += len(records)
            rows = [record.model_dump(by_alias=True) for record in records]
            # A failing merged call is split: only the request(s) it fails on fail.
            answers = answer_each(rows, lambda part: self.answer_rows(part, route))
            self.monitor.record(rows, answers)
            return answers

        def answer_rows(
            self, rows: list[dict[str, Any]], route: str | None = None
        ) -> list[Prediction]:
            # route None: the one ModelRouting gave the request (/predict)
            return [Prediction(**a) for a in self.models.answer_records(rows, route)]

        @bentoml.api
        def metadata(self) -> Metadata:
            """The model (tag, artifact, version, digest, signature, metrics) and the code
            (bento, git tag and commit) this service runs. Also ``GET /metadata``."""
            return self.describe()

        def describe(self) -> Metadata:
            bento = None
            with contextlib.suppress(Exception):
                ctx = bentoml.server_context
                if ctx.bento_name and ctx.bento_version not in ("", "not available"):
                    bento = f"{ctx.bento_name}:{ctx.bento_version}"
            return Metadata(
                model=model_tag,
                artifact=meta.get("artifact"),
                source_ref=meta.get("source_ref"),
                version=meta.get("version"),
                digest=meta.get("digest"),
                task=contract.task,
                target=meta.get("target"),
                classes=self.model.classes or [],
                feature_columns=meta.get("feature_columns") or contract.features,
                signature=meta.get("signature") or {"inputs": contract.inputs},
                metrics=meta.get("metrics") or {},
                bento=bento,
                git_tag=revision["git_tag"],
                git_commit=revision["git_commit"],
                model_git_commit=meta.get("git_commit"),
                run_id=meta.get("run_id"),
                engine=self.model.engine,
                fast_path={
                    "import": meta.get(FASTPATH_METADATA) or {},
                    "startup": self.model.fast_report,
                },
                limits=settings.limits(),
                batching={"model_calls": self.batch_calls, "rows": self.batch_rows},
                candidate=describe_candidate(
                    candidate_bento,
                    self.candidate,
                    dict(candidate_bento.info.metadata),
                    canary=settings.canary_percent,
                    shadow=settings.shadow_fraction,
                )
                if self.candidate is not None
                else None,
            )

    # issue 17, graceful drain: the arbiter holds new connections before it stops the workers
    # (serving.drain; the workers' half is serving.middleware.DrainMiddleware).
    bentoml_private.before_arbiter_stops(on_arbiter_stop)
    Tagserve.inner.Record, Tagserve.inner.Prediction = Record, Prediction
    document = service_document(
        Tagserve, contract, Record, Prediction, max_rows=settings.max_rows, version=model_tag
    )
    Tagserve.inner.openapi_document = document
    Tagserve.inner.openapi_body = orjson.dumps(document)
    routing = {"live": model_tag, "candidate": candidate_tag}  # issue 17: canary and shadow
    # Added first, so outermost: an answer's start and body are written together.
    bentoml_private.put_outermost_first()
    Tagserve.add_asgi_middleware(WholeAnswers)
    middleware.install(Tagserve, settings, allowed_methods(document), routing)
    bentoml_private.whole_requests_batching()  # a request is never split, so never cut
    return Tagserve


def __getattr__(name: str) -> Any:
    """``service:Tagserve`` (``bentoml serve``, ``bentoml build``): built on first use."""
    if name == "Tagserve":
        globals()["Tagserve"] = service = create_service()
        return service
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
