"""Input read with Arrow: record batches re-cut into chunks, and CSV files parsed by Arrow's
multi-threaded reader into the very frames pandas' reader gives.

pandas' CSV reader parses on one thread at about a third of Arrow's speed. Arrow's reader is
used only where its values are pandas' values: both parse a number to the nearest double
(pandas with ``float_precision="round_trip"``), and Arrow is given pandas' words for missing,
true and false. Where the two differ, this module raises :class:`NotLikePandas` before a
differing value reaches a chunk, and the caller reads the rest of the file with pandas:

- a type is fixed by Arrow's first block, by pandas per chunk: a later block that does not
  fit (a fraction in a column of integers, text in a column of numbers, a row with too few
  fields) stops Arrow, and pandas reads from there;
- Arrow reads ``0x1f`` as an integer (pandas as text), dates as timestamps, ``+5`` as a
  double (pandas as an integer), and integers beyond int64 as doubles (pandas as uint64 or
  text); ``NAN`` and ``1e400`` as numbers (pandas as text, then converted by
  ``pd.to_numeric``): such files, columns or chunks go to pandas;
- a whitespace-only line is no row for pandas, a row of one field for Arrow: a file of one
  column goes to pandas (in a wider file such a line is an error for Arrow, so pandas reads).

Missing values are NaN in every column, as pandas gives them (Arrow gives None in text).
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TRUE_WORDS = ["True", "TRUE", "true"]  # pandas' C parser's defaults
FALSE_WORDS = ["False", "FALSE", "false"]
# Above this a double may be an integer pandas reads as uint64 or text (see the docstring).
INT64_SPAN = 2.0**63
BLOCK_BYTES = 1 << 20
# The columns read as the model's type (pandas dtype -> Arrow type), never inferred.
FORCED_TYPES = {"float64": pa.float64(), "object": pa.string()}


class NotLikePandas(Exception):
    """Arrow cannot promise pandas' values from here on: read the rest with pandas."""


@dataclass(frozen=True)
class TableChunk:
    """A chunk of rows still in Arrow: what pandas' reader would give for them is
    :meth:`frame`, built only when asked (offline scoring builds the model's input from the
    columns themselves, on its scoring threads, and asks only when that cannot be done)."""

    table: pa.Table
    first_row: int  # the row number of its first row (0-based)
    parquet: bool = False  # read from Parquet: its frame is Arrow's plain conversion

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def columns(self) -> list[str]:
        return self.table.column_names

    @property
    def row_numbers(self) -> np.ndarray:
        return np.arange(self.first_row, self.first_row + self.table.num_rows, dtype=np.int64)

    @property
    def text_missing(self) -> float | None:
        """A missing text value in :meth:`frame`: NaN from a CSV file (as pandas reads it),
        None from Parquet (as Arrow converts it)."""
        return None if self.parquet else np.nan

    def frame(self) -> pd.DataFrame:
        """The rows as pandas' CSV reader gives them (see the module docstring), or, from
        Parquet, as Arrow converts them."""
        if self.parquet:
            return plain_frame(self.table, self.first_row)
        return _frame(self.table, self.first_row)


def table_chunks(
    batches: Iterator[pa.RecordBatch], chunk_size: int, drop: int = 0
) -> Iterator[pa.Table]:
    """Tables of exactly ``chunk_size`` rows (the last one fewer) from ``batches``, after
    dropping their first ``drop`` rows: batches end where blocks or row groups end."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        if drop:
            cut = min(drop, batch.num_rows)
            batch, drop = batch.slice(cut), drop - cut
        if batch.num_rows:
            pending.append(batch)
            pending_rows += batch.num_rows
        while pending_rows >= chunk_size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_size)
            rest = table.slice(chunk_size)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending)


def arrow_reads(
    path: str | Path, header: Sequence[str], names: Sequence[str], dtypes: dict[str, str]
) -> bool:
    """Whether Arrow may read the columns ``names`` of the CSV file ``path`` (``header``: its
    columns as pandas names them) at all; :func:`csv_chunks` checks the rest as it reads."""
    known = set(header)
    # pandas renames a repeated name "a" to "a.1": which "a" Arrow would pick is unclear.
    renamed = any(m and m.group(1) in known for m in map(re.compile(r"(.+)\.\d+$").match, header))
    if len(header) < 2 or renamed:
        return False
    # Only a column whose type Arrow infers can read hex as a number.
    inferred = any(dtypes.get(c) not in FORCED_TYPES for c in names)
    return not (inferred and _mentions_hex(path))


def _mentions_hex(path: str | Path) -> bool:
    """Whether ``0x``/``0X`` appears anywhere in the file (a memchr-speed scan; a file that
    cannot be mapped counts as one that does)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(b"0x") >= 0 or data.find(b"0X") >= 0
    except (OSError, ValueError):
        return True


def csv_chunks(
    path: str | Path,
    chunk_size: int,
    names: Sequence[str],
    dtypes: dict[str, str],
    skip: int,
    tables: bool = False,
) -> Iterator[pd.DataFrame | TableChunk]:
    """The columns ``names`` of the CSV file ``path`` in frames of ``chunk_size`` rows after
    the first ``skip`` rows, indexed by row number, value for value as pandas reads them
    (``dtypes``: the pandas dtype of each model column: doubles and text are read as such);
    with ``tables``, as :class:`TableChunk` (checked alike, converted only when asked).

    Raises:
        NotLikePandas: From the first chunk not yet given on (any Arrow error included).
    """
    import pyarrow.csv as pcsv
    from pandas._libs.parsers import STR_NA_VALUES  # the words pandas reads as missing

    convert = pcsv.ConvertOptions(
        column_types={c: FORCED_TYPES[dtypes[c]] for c in names if dtypes.get(c) in FORCED_TYPES},
        include_columns=list(names),
        null_values=sorted(STR_NA_VALUES),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        true_values=TRUE_WORDS,
        false_values=FALSE_WORDS,
    )
    row = skip
    try:
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(use_threads=True, block_size=BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=True),
            convert_options=convert,
        )
        with reader:
            _check_types(reader.schema, dtypes)
            for table in table_chunks(reader, chunk_size, skip):
                _check_values(table)
                yield TableChunk(table, row) if tables else _frame(table, row)
                row += table.num_rows
    except pa.ArrowException as exc:
        raise NotLikePandas(str(exc)) from None


def _check_types(schema: pa.Schema, dtypes: dict[str, str]) -> None:
    """The types Arrow inferred from the first block, where pandas infers the same ones."""
    for field in schema:
        kind, dtype = field.type, dtypes.get(field.name)
        if dtype in FORCED_TYPES or pa.types.is_null(kind):
            continue  # read as the model's type; all missing so far
        if dtype == "bool":
            ok = pa.types.is_boolean(kind)
        elif dtype is not None:  # integers and float32: pandas reads an int64 or a double
            ok = pa.types.is_int64(kind) or pa.types.is_float64(kind)
        else:  # the id column: "+5" would be a double for Arrow and an integer for pandas
            ok = pa.types.is_int64(kind) or pa.types.is_string(kind)
        if not ok:
            raise NotLikePandas(f"column {field.name!r} reads as {kind}")


def _check_values(table: pa.Table) -> None:
    """Raise :class:`NotLikePandas` where a value of ``table`` is one pandas reads otherwise."""
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_float64(column.type):
            # pandas gives text (a non-finite spelling) or uint64 for these: pandas reads on.
            within = pc.all(pc.less(pc.abs(column), INT64_SPAN)).as_py()
            if within is False:
                raise NotLikePandas(f"column {name!r} holds a value pandas reads otherwise")


def plain_frame(table: pa.Table, first_row: int) -> pd.DataFrame:
    """``table`` as Arrow converts it (Parquet input), rows numbered from ``first_row``."""
    frame = table.to_pandas()
    frame.index = pd.RangeIndex(first_row, first_row + len(frame))
    return frame


def _frame(table: pa.Table, first_row: int) -> pd.DataFrame:
    """``table`` (checked: :func:`_check_values`) as pandas' CSV reader gives it: missing
    values NaN, rows numbered from ``first_row``."""
    frame = table.to_pandas(split_blocks=True)  # deduplicated text objects
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_null(column.type):
            frame[name] = np.full(len(column), np.nan)
        elif column.null_count and frame[name].dtype == object:  # None from Arrow
            values = frame[name].to_numpy(copy=True)
            values[np.asarray(column.is_null())] = np.nan
            frame[name] = values
    frame.index = pd.RangeIndex(first_row, first_row + table.num_rows)
    return frame
