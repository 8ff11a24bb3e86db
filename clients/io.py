"""Chunked input (CSV, Parquet, JSON lines, stdin) and resumable, crash-safe output.

Input is read ``chunk_size`` rows at a time, never whole; each chunk is a DataFrame whose
index holds the global row numbers (0-based), which become the ``id`` column unless the input
names one.

Output goes to ``OUTPUT.partial/`` first: a manifest plus numbered Parquet parts, each a run
of consecutive input rows, written to a temporary name, fsynced and renamed, so that a killed
run leaves only whole parts. A run that finds a partial folder of the same job skips the rows
its parts hold; the last run assembles the parts into OUTPUT (Parquet, CSV or JSON lines, by
suffix) and renames it into place: OUTPUT exists only when every row has been written once.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clients.arrow_input import (
    NotLikePandas,
    TableChunk,
    arrow_reads,
    csv_chunks,
    plain_frame,
    table_chunks,
)
from clients.errors import ClientError
from inference import strict_json
from inference.files import write_atomically

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
STDIN = "-"
PREDICTION = "prediction"
DEFAULT_ID = "id"


def file_format(path: str | Path) -> str:
    if str(path) == STDIN:
        return "jsonl"
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".zst", ".xz") and len(suffixes) > 1:
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise ClientError(
            f"{path}: unknown file type (use .parquet, .csv or .jsonl, or - for JSON lines "
            "on stdin)"
        )
    return fmt


# --------------------------------------------------------------------------- input


def iter_chunks(
    path: str | Path,
    chunk_size: int,
    *,
    columns: list[str] | None = None,
    dtypes: dict[str, str] | None = None,
    skip: int = 0,
    tables: bool = False,
) -> Iterator[pd.DataFrame | TableChunk]:
    """Yield DataFrames of at most ``chunk_size`` rows, skipping the first ``skip`` rows.

    ``columns`` limits what is read (missing ones are simply absent: the caller checks);
    ``dtypes`` maps column -> pandas dtype for text formats (so "007" stays text). The index
    of every chunk is the global row number. ``tables``: the chunks Arrow reads (CSV, Parquet)
    come as :class:`~clients.arrow_input.TableChunk` (their ``frame()`` is the DataFrame),
    for a caller that can use the columns as they are.
    """
    if chunk_size < 1:
        raise ClientError("the chunk size must be at least 1")
    fmt = file_format(path)
    if str(path) != STDIN and not Path(path).is_file():
        raise ClientError(f"input file {path} does not exist")
    if fmt == "jsonl":
        yield from _jsonl_chunks(path, chunk_size, columns, dtypes or {}, skip)
        return
    reader = {"parquet": _parquet_chunks, "csv": _csv_chunks}[fmt]
    yield from reader(path, chunk_size, columns, dtypes or {}, skip, tables)


def count_rows(path: str | Path) -> int | None:
    """Rows in the input when cheap to know (Parquet metadata), else None."""
    if str(path) != STDIN and file_format(path) == "parquet":
        with contextlib.suppress(Exception):
            return pq.ParquetFile(path).metadata.num_rows
    return None


def _parquet_chunks(path, chunk_size, columns, dtypes, skip, tables=False):
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise ClientError(f"cannot read {path} as Parquet: {exc}") from exc
    names = pf.schema_arrow.names
    wanted = [c for c in columns if c in names] if columns is not None else None
    # None of the columns asked for: still read the rows (one column, dropped), so that the
    # caller sees rows lacking every column, not a file of no rows.
    dropped = names[:1] if wanted == [] else []
    wanted = dropped or wanted
    # Start at the row group holding row ``skip``: skipped groups are never read.
    start, first_group = 0, pf.metadata.num_row_groups
    for g in range(pf.metadata.num_row_groups):
        rows = pf.metadata.row_group(g).num_rows
        if start + rows > skip:
            first_group = g
            break
        start += rows
    groups = list(range(first_group, pf.metadata.num_row_groups))
    if not groups:
        return
    batches = pf.iter_batches(batch_size=chunk_size, row_groups=groups, columns=wanted)
    row = skip
    for table in table_chunks(batches, chunk_size, skip - start):
        if tables and not dropped:
            yield TableChunk(table, row, parquet=True)
        else:
            frame = plain_frame(table, row)
            yield frame.drop(columns=dropped) if dropped else frame
        row += table.num_rows


def _csv_chunks(path, chunk_size, columns, dtypes, skip, tables=False):
    with open(path, "rb") as f:
        if not f.read(4096).strip():
            raise ClientError(f"{path} is empty: a CSV file needs a header line naming the columns")
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ClientError(f"cannot read {path} as CSV: {exc}") from exc
    usecols = [c for c in columns if c in header] if columns is not None else None
    # None of the columns asked for: read the rows of one column, as text, and drop it (the
    # caller then names every column the rows lack, as it names some).
    dropped = [header[0]] if usecols == [] and len(header) else []
    usecols = dropped or usecols
    text_types = {c: t for c, t in dtypes.items() if t == "object" and c in header}
    text_types.update({c: "object" for c in dropped})
    names = header if usecols is None else [c for c in header if c in usecols]  # file order
    row = skip
    if names and not dropped and arrow_reads(path, header, names, dtypes):
        try:
            for chunk in csv_chunks(path, chunk_size, names, dtypes, skip, tables):
                yield chunk
                row += len(chunk)
            return
        except NotLikePandas:
            pass  # pandas reads the rest (see clients.arrow_input)
    yield from _pandas_csv_chunks(path, chunk_size, usecols, text_types, row, dropped)


def _pandas_csv_chunks(path, chunk_size, usecols, text_types, skip, dropped=()):
    try:
        # Rows are skipped after parsing, never as lines (``skiprows``): blank lines and
        # quoted values holding line breaks are not rows, and a resume must count rows.
        reader = pd.read_csv(
            path,
            chunksize=chunk_size,
            usecols=usecols,
            dtype={c: str for c in text_types} or None,
            float_precision="round_trip",  # the exact double a CSV value spells
        )
        frames = (f.drop(columns=dropped) for f in reader) if dropped else reader
        yield from _rechunk(_skip_rows(frames, skip), chunk_size, skip)
    except (ValueError, pd.errors.ParserError) as exc:
        raise ClientError(f"cannot read {path} as CSV: {exc}") from exc


def _skip_rows(frames: Iterator[pd.DataFrame], skip: int) -> Iterator[pd.DataFrame]:
    """The frames after their first ``skip`` rows in all."""
    for frame in frames:
        if skip >= len(frame):
            skip -= len(frame)
            continue
        yield frame.iloc[skip:] if skip else frame
        skip = 0


def _rechunk(frames: Iterator[pd.DataFrame], chunk_size: int, first_row: int):
    """Frames of exactly ``chunk_size`` rows (the last one fewer), indexed by row number
    from ``first_row``."""
    pending: list[pd.DataFrame] = []
    pending_rows, row = 0, first_row
    for frame in frames:
        pending.append(frame)
        pending_rows += len(frame)
        while pending_rows >= chunk_size:
            table = pd.concat(pending) if len(pending) > 1 else pending[0]
            chunk, rest = table.iloc[:chunk_size], table.iloc[chunk_size:]
            yield chunk.set_axis(pd.RangeIndex(row, row + chunk_size))
            row += chunk_size
            pending, pending_rows = ([rest] if len(rest) else []), len(rest)
    if pending_rows:
        table = pd.concat(pending) if len(pending) > 1 else pending[0]
        yield table.set_axis(pd.RangeIndex(row, row + pending_rows))


def _jsonl_chunks(path, chunk_size, columns, dtypes, skip):
    stream = sys.stdin if str(path) == STDIN else open(path, encoding="utf-8")  # noqa: SIM115
    name = "stdin" if str(path) == STDIN else str(path)
    try:
        records: list[dict[str, Any]] = []
        row = 0
        for line_no, line in enumerate(stream, 1):
            if not line.strip():
                continue
            if row < skip:
                row += 1
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ClientError(f"{name}, line {line_no}: not JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise ClientError(f"{name}, line {line_no}: expected a JSON object per line")
            records.append(record)
            if len(records) == chunk_size:
                yield _records_frame(records, row - len(records) + 1, columns)
                records = []
            row += 1
        if records:
            yield _records_frame(records, row - len(records), columns)
    finally:
        if stream is not sys.stdin:
            stream.close()


def _records_frame(records, first_row, columns):
    frame = pd.DataFrame.from_records(records)
    if columns is not None:
        frame = frame[[c for c in columns if c in frame.columns]]
    frame.index = pd.RangeIndex(first_row, first_row + len(frame))
    return frame


def _json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: Python scalars, missing values as None (never NaN)."""
    obj = frame.astype(object)
    return obj.where(frame.notna(), None).to_dict("records")


# --------------------------------------------------------------------------- output


@dataclass
class Manifest:
    """What a partial output belongs to: resuming another job's partial output is an error."""

    input: str
    input_size: int | None
    model: str
    id_column: str | None
    # The model's input columns written beside the prediction (score --keep-input): a resumed
    # run must write them too, or not at all.
    keep_input: bool = False

    @classmethod
    def for_job(
        cls, input: str | Path, model: str, id_column: str | None, keep_input: bool = False
    ) -> Manifest:
        stdin = str(input) == STDIN
        file_format(input)
        if not stdin and not Path(input).is_file():
            raise ClientError(f"input file {input} does not exist")
        return cls(
            input=STDIN if stdin else str(Path(input).resolve()),
            input_size=None if stdin else Path(input).stat().st_size,
            model=model,
            id_column=id_column,
            keep_input=keep_input,
        )


class PartWriter:
    """Resumable output: whole parts in ``OUTPUT.partial/``, then OUTPUT in one rename."""

    def __init__(self, output: str | Path, manifest: Manifest, *, overwrite: bool = False):
        self.output = Path(output)
        self.format = file_format(self.output)
        if str(output) == STDIN:
            raise ClientError("the output must be a file, not -")
        self.partial = self.output.with_name(self.output.name + ".partial")
        self.manifest = manifest
        self.rows_done = 0
        self.parts = 0
        self.last_id: Any = None
        self._open(overwrite)

    # -- state

    def _open(self, overwrite: bool) -> None:
        if not self.output.parent.is_dir():
            raise ClientError(f"output folder {self.output.parent} does not exist")
        if overwrite:
            shutil.rmtree(self.partial, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                self.output.unlink()
        elif self.output.exists():
            raise ClientError(f"{self.output} already exists (pass --overwrite to replace it)")
        manifest_file = self.partial / "manifest.json"
        if manifest_file.is_file():
            self._resume(manifest_file)
        else:
            shutil.rmtree(self.partial, ignore_errors=True)
            self.partial.mkdir()
            manifest = json.dumps(self.manifest.__dict__, indent=1).encode()
            write_atomically(manifest_file, lambda out: out.write(manifest))

    def _resume(self, manifest_file: Path) -> None:
        try:
            found = json.loads(manifest_file.read_text())
        except (OSError, ValueError) as exc:
            raise ClientError(f"cannot read {manifest_file}: {exc}") from exc
        mine = self.manifest.__dict__
        # a manifest written before keep_input existed kept no input
        different = [
            k for k in mine if found.get(k, False if k == "keep_input" else None) != mine[k]
        ]
        if different:
            what = ", ".join(f"{k} {found.get(k)!r} (now {mine[k]!r})" for k in different)
            raise ClientError(
                f"{self.partial} belongs to another job: {what}; remove it, or pass "
                "--overwrite to start over"
            )
        for stray in self.partial.glob("*.tmp"):
            stray.unlink()
        parts = self.part_files()
        for i, part in enumerate(parts):
            if part.name != _part_name(i):
                raise ClientError(f"{self.partial}: part {part.name} is out of sequence")
        self.parts = len(parts)
        self.rows_done = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
        if parts:
            table = pq.read_table(parts[-1], columns=[self.id_name])
            self.last_id = table.column(0)[-1].as_py() if table.num_rows else None

    @property
    def id_name(self) -> str:
        return self.manifest.id_column or DEFAULT_ID

    def part_files(self) -> list[Path]:
        return sorted(self.partial.glob("part-*.parquet"))

    def remaining_chunks(
        self,
        path: str | Path,
        chunk_size: int,
        *,
        columns: list[str] | None = None,
        dtypes: dict[str, str] | None = None,
        tables: bool = False,
    ) -> Iterator[pd.DataFrame | TableChunk]:
        """The input chunks after the rows already written (``tables``: as ``iter_chunks``,
        where the rows are numbered, not named by an id column).

        On resume, the last written row is read again and must carry the last written id
        (with an input id column): a changed input is an error, not a silent mix.
        """
        id_column = self.manifest.id_column
        if columns is not None and id_column and id_column not in columns:
            columns = [*columns, id_column]
        skip = max(self.rows_done - 1, 0) if id_column else self.rows_done
        tables = tables and not id_column
        chunks = iter_chunks(
            path, chunk_size, columns=columns, dtypes=dtypes, skip=skip, tables=tables
        )
        first = True
        for chunk in chunks:
            if id_column and id_column not in chunk.columns:
                raise ClientError(f"input has no id column {id_column!r}")
            if first and id_column and self.rows_done:
                first = False
                got = chunk[id_column].iloc[0]
                got = got.item() if hasattr(got, "item") else got
                if str(got) != str(self.last_id):
                    raise ClientError(
                        f"{self.partial} ends at id {self.last_id!r} but input row "
                        f"{self.rows_done - 1} has id {got!r}: the input changed; pass "
                        "--overwrite to start over"
                    )
                chunk = chunk.iloc[1:]
                if not len(chunk):
                    continue
            first = False
            yield chunk

    def ids_of(self, chunk: pd.DataFrame | TableChunk) -> Any:
        """The id column values of a chunk: the input's id column, or the row numbers."""
        if isinstance(chunk, TableChunk):
            return chunk.row_numbers
        if self.manifest.id_column:
            return chunk[self.manifest.id_column].to_numpy()
        return chunk.index.to_numpy()

    # -- writing

    def write(self, ids: Any, predictions: Any, inputs: pd.DataFrame | None = None) -> None:
        """Append the next consecutive rows as one durable part: their ids, their ``inputs``
        (the model's columns, with --keep-input) and their predictions."""
        frame = pd.DataFrame({self.id_name: np.asarray(ids)})
        for name in inputs.columns if inputs is not None else []:
            if name != self.id_name:
                frame[name] = inputs[name].to_numpy()
        frame[PREDICTION] = np.asarray(predictions)
        if not len(frame):
            return
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # ids of mixed types: keep them as text
            frame[self.id_name] = [None if pd.isna(v) else str(v) for v in frame[self.id_name]]
            table = pa.Table.from_pandas(frame, preserve_index=False)
        write_atomically(
            self.partial / _part_name(self.parts),
            lambda out: pq.write_table(
                table, out, use_dictionary=_dictionary_columns(table.schema)
            ),
        )
        self.parts += 1
        self.rows_done += len(frame)
        self.last_id = table.column(0)[-1].as_py()

    def finish(self) -> Path:
        """Assemble the parts into OUTPUT (atomically) and remove the partial folder."""
        parts = self.part_files()
        schema = _unified_schema([pq.read_schema(p) for p in parts], self.id_name)
        if self.format == "parquet":
            write_atomically(self.output, lambda out: _write_parquet(out, parts, schema))
        else:
            write_atomically(self.output, lambda out: self._write_text(out, parts, schema))
        shutil.rmtree(self.partial, ignore_errors=True)
        return self.output

    def abandon(self) -> None:
        """Remove the partial output of a run that failed (bad input, a model that refuses
        it): nothing half-made is left behind. An interrupted run keeps it, to resume."""
        shutil.rmtree(self.partial, ignore_errors=True)

    def _write_text(self, out: IO[bytes], parts: list[Path], schema: pa.Schema) -> None:
        """The parts as CSV (one header line) or JSON lines, in UTF-8."""
        text = io.TextIOWrapper(out, encoding="utf-8", newline="")
        for i, part in enumerate(parts):
            frame = _cast(pq.read_table(part), schema).to_pandas()
            if self.format == "csv":
                frame.to_csv(text, index=False, header=i == 0)
            else:
                for record in _json_rows(frame):
                    text.write(strict_json.dumps(record) + "\n")
        if not parts and self.format == "csv":
            text.write(f"{self.id_name},{PREDICTION}\n")
        text.flush()
        text.detach()  # the caller flushes and closes ``out``


def _write_parquet(out: IO[bytes], parts: list[Path], schema: pa.Schema) -> None:
    with pq.ParquetWriter(out, schema, use_dictionary=_dictionary_columns(schema)) as writer:
        for part in parts:
            writer.write_table(_cast(pq.read_table(part), schema))


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth a Parquet dictionary: text (labels, ids). Predictions and numeric
    ids are nearly all distinct, and trying a dictionary on them costs more than the rest of
    the writing."""
    return [
        f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]


def _part_name(i: int) -> str:
    return f"part-{i:08d}.parquet"


def _unified_schema(schemas: list[pa.Schema], id_name: str) -> pa.Schema:
    """One schema for all parts: ints widen to floats, nulls take the other type, else text."""
    if not schemas:
        return pa.schema([(id_name, pa.int64()), (PREDICTION, pa.float64())])
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        fields = []
        for name in schemas[0].names:
            types = {s.field(name).type for s in schemas}
            fields.append((name, types.pop() if len(types) == 1 else pa.string()))
        return pa.schema(fields)


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    table = table.select(schema.names)
    if table.schema.equals(schema):
        return table
    columns = []
    for name, column in zip(schema.names, table.columns, strict=True):
        target = schema.field(name).type
        if column.type != target and target == pa.string() and not pa.types.is_string(column.type):
            column = pa.array(
                [None if v is None else str(v) for v in column.to_pylist()], pa.string()
            )
        columns.append(column.cast(target))
    return pa.Table.from_arrays(columns, schema=schema)
