"""``python -m release models``: the BentoML store's tagserve models with what a reader needs
to pick one, one line each: the exact tag (``bentoml models list`` cuts it off, and
``TAGSERVE_MODEL``/``TAGSERVE_CANDIDATE`` need it whole), the ``stage`` label the importer keeps
true, the artifact it came from, and its lineage (run, git commit, data versions)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from inference.bento import stage_of
from inference.constants import PROD_ALIAS

COLUMNS = ("tag", "stage", "artifact", "run", "commit", "data", "created")


@dataclass(frozen=True)
class ModelLine:
    """One model of the store, as :func:`table` prints it."""

    tag: str
    stage: str
    artifact: str
    run: str
    commit: str
    data: str
    created: str

    def cells(self) -> tuple[str, ...]:
        return tuple(getattr(self, c) for c in COLUMNS)


def model_line(model: Any) -> ModelLine:
    """What the importer recorded of ``model`` (a BentoML model); ``-`` where it is missing (a
    model imported from a folder has no run or data lineage)."""
    meta = model.info.metadata or {}
    lineage = meta.get("lineage") if isinstance(meta.get("lineage"), dict) else {}
    data = ",".join(str(v.get("ref")) for v in lineage.values() if isinstance(v, dict))
    return ModelLine(
        tag=str(model.tag),
        stage=stage_of(model),
        artifact=artifact_of(meta),
        run=str(meta.get("run_id") or "-"),
        commit=str(meta.get("git_commit") or "-")[:12],
        data=data or "-",
        created=model.info.creation_time.strftime("%Y-%m-%d %H:%M"),
    )


def artifact_of(meta: dict[str, Any]) -> str:
    """The exact artifact version the model was imported from (``source_ref`` names the alias
    asked for, e.g. ``:prod``, which moves)."""
    exact, source = meta.get("artifact_qualified_name"), meta.get("source")
    if exact and source:
        return f"{source}:{exact}"
    return str(meta.get("source_ref") or "-")


def store_models(name: str | None = None) -> list[ModelLine]:
    """Every model of the store (or of ``name``): the prod models first (what serve and
    release ship by default), then by name, newest first."""
    import bentoml

    models = [m for m in bentoml.models.list() if name is None or m.tag.name == name]
    models.sort(key=lambda m: m.info.creation_time, reverse=True)
    models.sort(key=lambda m: (stage_of(m) != PROD_ALIAS, m.tag.name))  # stable: newest first
    return [model_line(m) for m in models]


def table(lines: Iterable[ModelLine]) -> str:
    """Aligned columns with a header line; nothing cut."""
    rows = [COLUMNS, *(line.cells() for line in lines)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
