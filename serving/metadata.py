"""``/metadata``: the model (tag, artifact, version, digest, signature, metrics), the code
(bento, git tag and commit) and the limits this service runs with, and its candidate."""

from __future__ import annotations

import contextlib
from typing import Any

import bentoml

from inference.constants import FASTPATH_METADATA
from serving.schema import Metadata
from serving.state import ServiceState

CANDIDATE_KEYS = ("artifact", "source_ref", "version", "digest", "run_id", "git_commit", "metrics")


def running_bento() -> str | None:
    """``name:version`` of the bento this service runs from; None under ``bentoml serve
    service:Tagserve``."""
    with contextlib.suppress(Exception):
        ctx = bentoml.server_context
        if ctx.bento_name and ctx.bento_version not in ("", "not available"):
            return f"{ctx.bento_name}:{ctx.bento_version}"
    return None


def describe(state: ServiceState) -> Metadata:
    """The service's ``/metadata`` answer."""
    meta, contract, live = state.contract.metadata, state.contract, state.models.live
    return Metadata(
        model=state.models.live_tag,
        artifact=meta.get("artifact"),
        source_ref=meta.get("source_ref"),
        version=meta.get("version"),
        digest=meta.get("digest"),
        task=contract.task,
        target=meta.get("target"),
        classes=live.classes or [],
        feature_columns=meta.get("feature_columns") or contract.features,
        signature=meta.get("signature") or {"inputs": contract.inputs},
        metrics=meta.get("metrics") or {},
        bento=running_bento(),
        git_tag=state.revision["git_tag"],
        git_commit=state.revision["git_commit"],
        model_git_commit=meta.get("git_commit"),
        run_id=meta.get("run_id"),
        engine=live.engine,
        fast_path={"import": meta.get(FASTPATH_METADATA) or {}, "startup": live.fast_report},
        limits=state.settings.limits(),
        domain={"columns": state.contract.domain, "enforced": state.settings.domain_enforced()},
        batching={"model_calls": state.counts.model_calls, "rows": state.counts.rows},
        candidate=describe_candidate(state),
    )


def describe_candidate(state: ServiceState) -> dict[str, Any] | None:
    """``/metadata``'s ``candidate``: tag, lineage, fast path, and its share of traffic."""
    loaded, meta = state.models.candidate, state.candidate_meta
    if loaded is None or meta is None:
        return None
    return {
        "model": state.models.candidate_tag,
        **{k: meta.get(k) for k in CANDIDATE_KEYS},
        "engine": loaded.engine,
        "fast_path": {"import": meta.get(FASTPATH_METADATA) or {}, "startup": loaded.fast_report},
        "canary_percent": state.settings.canary_percent,
        "shadow_fraction": state.settings.shadow_fraction,
    }
