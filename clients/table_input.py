"""The fast path's input built straight from the Arrow columns of a chunk, for offline scoring.

The way through pandas (``TableChunk.frame``, then ``inference.contract.coerce``, then
``FastModel.transform``) turns every text value into a Python object, checks it against the
model's domain one object at a time, and hashes it to find its category: on a file of many
rows that costs as much as the forest. Here a text column is dictionary-encoded by Arrow, and
only its distinct values go through the fast path's own lookup (the very function the frame's
way calls), so the codes are those the frame's way finds, and the numbers go to the same
arithmetic: the input, and so the predictions, are the same bit for bit.

It is taken only where the frame's way would accept every value and take the fast path:
columns of the contract's ``double`` and ``string`` types, read as such, every value within
the type's and the domain's bounds. Anything else (a refused value, another type, a missing
column) gives None, and the caller takes the frame's way, which raises its own errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from inference.contract import TYPES, Column, Contract, range_mask
from inference.fastpath import FastModel, encoded_block, numeric_block

# The contract's types read here, and the Arrow type each must have been read as.
ARROW_TYPES = {"double": pa.float64(), "string": pa.string()}


def forest_input(
    table: pa.Table, contract: Contract, fast: FastModel, text_missing: Any = np.nan
) -> np.ndarray | None:
    """What ``fast.transform(coerce(frame, contract))`` gives for ``frame``, the rows of
    ``table`` as ``clients.arrow_input.TableChunk.frame`` gives them (``text_missing``: a
    missing text value there, NaN or None), or None where this cannot promise it."""
    values: dict[str, Any] = {}
    for col in contract.columns:
        if col.name not in table.column_names:
            return None
        column = table.column(col.name)
        if ARROW_TYPES.get(col.type) != column.type:
            return None
        if col.type == "double":
            values[col.name] = column.to_numpy()  # a missing value is NaN, as pandas gives it
            if not _numbers_accepted(values[col.name], col):
                return None
        else:
            values[col.name] = column
    parts = []
    for b, block in enumerate(fast.spec["blocks"]):
        columns = [values[c] for c in block["columns"]]
        if block["kind"] == "numeric":
            numeric = all(isinstance(c, np.ndarray) for c in columns)
            part = numeric_block(block, columns) if numeric else None
        else:
            codes = [_codes(fast, b, j, c, contract, text_missing) for j, c in enumerate(columns)]
            known = all(c is not None for c in codes)
            part = encoded_block(block, codes, len(table)) if known else None
        if part is None:
            return None
        parts.append(part)
    return np.hstack(parts) if len(parts) > 1 else parts[0]


def _numbers_accepted(numbers: np.ndarray, col: Column) -> bool:
    """Whether ``coerce`` takes every value of a double column as it is (NaN: missing)."""
    present = numbers[~np.isnan(numbers)]
    low, high = TYPES[col.type].bounds
    ok = (present >= low) & (present <= high)
    if col.range is not None:
        ok &= range_mask(present, col.range)
    return bool(ok.all())


def _codes(
    fast: FastModel, b: int, j: int, column: Any, contract: Contract, text_missing: Any
) -> np.ndarray | None:
    """The category codes of a text ``column`` (column ``j`` of block ``b``), or None: a
    column that is not text, a value outside the domain, a value the fast path delegates."""
    if not isinstance(column, pa.ChunkedArray):
        return None
    encoded = column.combine_chunks().dictionary_encode()
    distinct = encoded.dictionary.to_numpy(zero_copy_only=False)
    col = next(c for c in contract.columns if c.name == fast.spec["blocks"][b]["columns"][j])
    if col.category_set is not None and not col.category_set.issuperset(distinct.tolist()):
        return None
    known = fast.category_codes(b, j, distinct)
    if known is None:
        return None
    indices = encoded.indices
    if indices.null_count:
        # The frame's missing value (NaN or None), looked up as the frame's way does.
        missing = fast.category_codes(b, j, np.array([text_missing], dtype=object))
        if missing is None:
            return None
        known = np.append(known, missing)
        indices = indices.fill_null(len(distinct))
    return known[indices.to_numpy()]
