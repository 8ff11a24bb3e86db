"""The start-up check of a candidate model (``TAGSERVE_CANDIDATE=<exact model tag>``), run in
the ``bentoml serve`` process before any worker starts: a model of the BentoML store, checked
by the loader's trust rules and against the live model's input contract, refused in one
readable line. The workers then load it by the same loader as the live model
(``serving.model_choice``); the canary and the shadow are ``serving.routing`` and
``serving.shadow``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inference.bento import get_model, mlflow_folder
from inference.contract import Contract
from inference.errors import ModelRefused, TagserveError
from inference.loading import check_model


class CandidateRefused(TagserveError):
    """A candidate that cannot be served beside the live model."""


def _signature(contract: Contract) -> list[tuple[str, str, bool]]:
    return [(c.name, c.type, c.required) for c in contract.columns]


def check_candidate(
    tag: str, live_tag: str, live: Contract, contract_of: Callable[[Any], Contract]
) -> Any:
    """The BentoML model of the candidate ``tag``, if it may be served beside the live model
    ``live_tag`` (``contract_of``: a model's contract, as the service reads it).

    Raises:
        CandidateRefused: Not an exact tag (``name:version``), not in the store, the live
            model itself, a model the loader's trust rules refuse, another task, or another
            input contract (columns, types, optional columns).
    """
    name, _, version = tag.partition(":")
    where = f"TAGSERVE_CANDIDATE={tag!r}"
    if not name or version in ("", "latest"):
        raise CandidateRefused(
            f"{where}: a candidate is named by its exact tag (name:version, as `bentoml "
            "models list` shows it), never by name or name:latest"
        )
    try:
        model = get_model(tag)
        check_model(mlflow_folder(model))
    except ModelRefused as exc:
        raise CandidateRefused(f"{where} is refused: {exc}") from None
    except TagserveError as exc:
        raise CandidateRefused(f"{where}: {exc}") from None
    if str(model.tag) == live_tag:
        raise CandidateRefused(f"{where} is the live model itself")
    contract = contract_of(model)
    if contract.task != live.task:
        raise CandidateRefused(
            f"{where} is a {contract.task} model; the live model {live_tag} is a {live.task} one"
        )
    want, got = _signature(live), _signature(contract)
    if got != want:
        missing = [f"{n} ({t})" for n, t, _ in want if (n, t) not in {(a, b) for a, b, _ in got}]
        extra = [f"{n} ({t})" for n, t, _ in got if (n, t) not in {(a, b) for a, b, _ in want}]
        detail = "; ".join(
            part
            for part in (
                f"the live model's {', '.join(missing)} missing or of another type"
                if missing
                else "",
                f"not taken by the live model: {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise CandidateRefused(
            f"{where} takes other input than the live model {live_tag}: "
            f"{detail or 'columns in another order or with other required flags'}"
        )
    return model


def checked_candidate(
    tag: str, live_tag: str, live: Contract, contract_of: Callable[[Any], Contract]
) -> Any:
    """:func:`check_candidate` for ``bentoml serve``: its model, or None without a candidate
    (``tag`` ""); a refusal stops the server with its one line."""
    if not tag:
        return None
    import bentoml

    try:
        return check_candidate(tag, live_tag, live, contract_of)
    except CandidateRefused as exc:
        raise bentoml.exceptions.BentoMLConfigException(str(exc)) from None
