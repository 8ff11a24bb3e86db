"""The Open Inference Protocol's handlers (KServe V2 REST): thin Starlette handlers over
``serving.v2``'s functions, reading the worker's ``serving.state``; ``serving.routes`` mounts
them beside ``/invocations`` at its ``V2*`` paths.

An infer request predicts as ``/invocations`` does: one model call per request (no adaptive
batcher: one client's bad rows never fail another's request), through the service's model
choice (canary and shadow; ``serving.model_choice``), recorded by the monitor. Its paths share
one load-shedding budget (``serving.middleware.stack``) and, the live model's without a
version, are routed by the canary.
"""

from __future__ import annotations

import logging
from typing import Any

import bentoml
import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from inference.errors import InputError
from serving.batching import INPUT_FAULTS, described
from serving.routing import CANDIDATE, LIVE, MODEL_HEADER, route_var
from serving.state import ServiceState, current
from serving.v2 import (
    PREDICTIONS,
    PROBABILITIES,
    ServedModel,
    encode_answer,
    model_metadata,
    parse_infer,
    server_metadata,
)

logger = logging.getLogger("bentoml.service.tagserve")
# Requests of at most this many rows are scored as /predict's records are, on the event loop
# (a worker thread would fight the loop for the GIL); larger ones as /invocations' frames are,
# in a thread.
INLINE_ROWS = 64


def served_models(state: ServiceState) -> list[ServedModel]:
    """The models the service answers for: the live one, and the candidate if any."""
    choice = state.models
    served = [ServedModel.of(choice.live_tag, LIVE)]
    if choice.candidate is not None:
        served.append(ServedModel.of(choice.candidate_tag, CANDIDATE))
    return served


def find_model(state: ServiceState, name: str, version: str | None) -> ServedModel | None:
    """The served model ``name`` (of ``version`` when given), or None."""
    for model in served_models(state):
        if model.name == name and version in (None, model.version):
            return model
    return None


def classes_of(state: ServiceState, role: str) -> list[Any] | None:
    """The classes of the model of ``role`` (a classifier's), or None (a regressor)."""
    if state.contract.task != "classification":
        return None
    model = state.models.candidate if role == CANDIDATE else state.models.live
    return model.classes


def error(message: str, status: int = 400, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def not_found(state: ServiceState, name: str, version: str | None) -> Response:
    served = ", ".join(f"{m.name} (version {m.version})" for m in served_models(state))
    which = f"{name!r}" + (f" version {version!r}" if version is not None else "")
    return error(f"no model {which} here; this service serves {served}", 404)


def requested(request: Request) -> tuple[ServiceState, str | None, ServedModel | Response]:
    """The worker's state, the version the path names (None: any), and the served model the
    path names, or the 404 to answer when this service serves no such model."""
    name, version = request.path_params["name"], request.path_params.get("version")
    state = current()
    model = find_model(state, name, version)
    return state, version, model if model is not None else not_found(state, name, version)


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


async def server(_: Request) -> Response:
    """``GET /v2``."""
    from importlib.metadata import version

    return _json(server_metadata(version("bentoml")))


async def live(_: Request) -> Response:
    """``GET /v2/health/live``."""
    return _json({"live": True})


async def ready(_: Request) -> Response:
    """``GET /v2/health/ready``: the model is loaded (503 until then)."""
    try:
        current()
    except bentoml.exceptions.BentoMLException:
        return JSONResponse({"ready": False}, status_code=503)
    return _json({"ready": True})


async def metadata(request: Request) -> Response:
    """``GET /v2/models/{name}[/versions/{version}]``."""
    state, _, model = requested(request)
    if isinstance(model, Response):
        return model
    classes = classes_of(state, model.role)
    return _json(model_metadata(state.contract, model.name, model.version, classes))


async def model_ready(request: Request) -> Response:
    """``GET /v2/models/{name}[/versions/{version}]/ready``."""
    state, _, model = requested(request)
    if isinstance(model, Response):
        return model
    return _json({"name": model.name, "ready": True})


async def infer(request: Request) -> Response:
    """``POST /v2/models/{name}[/versions/{version}]/infer``."""
    state, version, named = requested(request)
    if isinstance(named, Response):
        return named
    # The live model's path without a version is routed (canary, shadow); others name theirs.
    routed = version is None and named.role == LIVE
    route = route_var.get() if routed else named.role
    answering = next(
        m for m in served_models(state) if m.role == (CANDIDATE if route == CANDIDATE else LIVE)
    )
    # ModelRouting tags the routed path's answers; a versioned path's are tagged here.
    tagged = {} if routed else {MODEL_HEADER: f"{answering.name}:{answering.version}"}
    classes = classes_of(state, answering.role)
    names = [PREDICTIONS, PROBABILITIES] if classes else [PREDICTIONS]
    body = await request.body()
    try:
        parsed = parse_infer(body, request.headers, state.contract, state.settings.max_rows, names)
        predicted, proba = await predicted_outputs(state, parsed, route, classes)
    except InputError as exc:
        return error(str(exc), headers=tagged)
    except INPUT_FAULTS as exc:  # checked values the model still cannot take
        return error(f"the model cannot take this input ({described(exc)})", headers=tagged)
    except Exception:
        logger.exception("%s failed", request.url.path)
        return error("the model failed on this input; see the server log", 500, tagged)
    values = {PREDICTIONS: predicted, PROBABILITIES: proba}
    content, headers = encode_answer(answering, parsed.request_id, parsed.outputs, values, classes)
    return Response(content, headers={**headers, **tagged})


async def predicted_outputs(
    state: ServiceState, parsed: Any, route: str, classes: list[Any] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The outputs of a parsed request (``serving.v2.InferRequest``): a small one through
    ``/predict``'s record entry on the loop, a larger one as a frame in a thread; monitored
    as those routes' rows are."""
    import anyio

    if parsed.rows <= INLINE_ROWS:
        return score_records(state, parsed.records(), route, classes)
    with_proba = any(output == PROBABILITIES for output, _ in parsed.outputs)
    frame = parsed.frame()
    predicted, proba = await anyio.to_thread.run_sync(
        state.models.predict_arrays, frame, route, with_proba
    )
    state.monitor.record(frame, predicted)
    return predicted, proba


def score_records(
    state: ServiceState, records: list[dict[str, Any]], route: str, classes: list[Any] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """A small request's outputs through ``/predict``'s record entry (no frame: the fast
    path's single-record cost), monitored as ``/predict``'s records are."""
    answers = state.models.predict_records(records, route)
    state.monitor.record(records, answers)
    if not classes:  # a non-finite prediction is None in an answer: NaN again here
        return np.array([a["prediction"] for a in answers], dtype=np.float64), None
    names = [str(c) for c in classes]
    predicted = np.array([a["prediction"] for a in answers])
    return predicted, np.array([[a["probabilities"][n] for n in names] for a in answers])
