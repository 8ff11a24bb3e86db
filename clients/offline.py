"""Offline batch inference: score a file in chunks with the model itself, no server.

Three stages run at once (``clients.overlap``): a thread reads chunks (Arrow's parsers,
``clients.io``), ``threads`` threads score them (the compiled forest runs outside the GIL; a
model with its fast path takes its input from the chunk's Arrow columns where it can,
``clients.table_input``),
and this thread writes each scored chunk, in input order, as one part of the resumable
output (see ``clients.io``): an interrupted run continues where its last whole part ended.
Memory holds a few chunks (:func:`chunks_ahead`; plus, for Parquet input, the row group
being read), so the input can be far larger than memory.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from clients.arrow_input import TableChunk
from clients.errors import ClientError
from clients.io import PREDICTION, Manifest, PartWriter, count_rows
from clients.model import ModelInfo, OfflineModel
from clients.overlap import ordered_map

DEFAULT_CHUNK_SIZE = 50_000


def chunks_ahead(threads: int) -> int:
    """Chunks between reading and writing: one being scored per thread, as many read ahead,
    and the next one for the writer."""
    return 2 * threads + 1


@dataclass
class ScoreSummary:
    rows: int  # scored by this run
    resumed_from: int  # rows already in the partial output when this run started
    seconds: float  # reading, predicting and writing (the model load is apart)
    load_seconds: float
    output: Path
    engine: str = "sklearn"  # what computed the predictions (inference.model.LoadedModel)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        resumed = f", resumed after {self.resumed_from:,} rows" if self.resumed_from else ""
        return (
            f"scored {self.rows:,} rows in {self.seconds:.1f} s ({self.rows_per_s:,.0f} rows/s; "
            f"model load {self.load_seconds:.1f} s{resumed}) -> {self.output} "
            f"(engine: {self.engine})"
        )


def score_file(
    input: str | Path,
    output: str | Path,
    info: ModelInfo,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    id_column: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    threads: int = 1,
    keep_input: bool = False,
) -> ScoreSummary:
    """Score ``input`` with the model ``info`` into ``output`` (id column, the model's input
    columns with ``keep_input``, ``prediction``); ``threads``: chunks scored at once (each row
    is computed alone, in tree order, so the predictions are the same whatever the count). A
    run that fails removes its partial output (an interrupted one keeps it, to resume)."""
    if keep_input and PREDICTION in info.features:
        raise ClientError(f"--keep-input: the model has an input column named {PREDICTION!r}")
    # loaded with the first chunk, once that chunk fits the model, while the next are read
    model = OfflineModel(info)
    manifest = Manifest.for_job(input, info.ref, id_column, keep_input)
    writer = PartWriter(output, manifest, overwrite=overwrite)
    try:
        return _score(input, info, model, writer, chunk_size, progress, keep_input, threads)
    except Exception:
        writer.abandon()
        raise


def _score(
    input: str | Path,
    info: ModelInfo,
    model: OfflineModel,
    writer: PartWriter,
    chunk_size: int,
    progress: bool,
    keep_input: bool,
    threads: int,
) -> ScoreSummary:
    from tqdm import tqdm

    resumed_from = writer.rows_done
    total = count_rows(input)
    bar = tqdm(
        total=total,
        initial=resumed_from,
        unit="rows",
        unit_scale=True,
        disable=True if not progress else None,  # None: only on a terminal
        desc="score",
        dynamic_ncols=True,
    )
    chunks = writer.remaining_chunks(
        input, chunk_size, columns=info.features, dtypes=info.dtypes, tables=not keep_input
    )

    def score(chunk):
        if isinstance(chunk, TableChunk):  # the model's input from the columns themselves
            predictions = model.predict_table(chunk.table, chunk.text_missing)
            if predictions is not None:
                return writer.ids_of(chunk), predictions, None
            chunk = chunk.frame()
        X = model.inputs(chunk)
        return writer.ids_of(chunk), model.predict_inputs(X), X if keep_input else None

    start = time.perf_counter()
    scored = 0
    scoring = ordered_map(score, chunks, workers=threads, ahead=chunks_ahead(threads))
    with bar, contextlib.closing(scoring):  # an error stops the reader and scorers at once
        for ids, predictions, X in scoring:
            writer.write(ids, predictions, X)
            scored += len(ids)
            bar.update(len(ids))
    writer.finish()
    seconds = time.perf_counter() - start - model.load_seconds
    engine = model.loaded.engine if scored else "none (nothing to score)"
    return ScoreSummary(
        scored, resumed_from, seconds, model.load_seconds, writer.output, engine=engine
    )
