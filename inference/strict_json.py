"""JSON the project writes for others, always strict (RFC 8259): a missing value is ``null``, a
non-finite number is never written (``null`` too), numpy values are plain JSON values. Every
parser takes it: ``JSON.parse``, ``httpx.post(json=...)``, BentoML's clients, orjson.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, and MLflow writes a missing number
in a model's input examples as a bare ``NaN``: what the project writes goes through here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """``value`` as plain JSON values: numpy scalars and arrays as Python ones, a non-finite
    float (NaN, infinity) as None, mapping keys as text."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, **options: Any) -> str:
    """``value`` as strict JSON text (``json.dumps`` options, e.g. ``indent``)."""
    return json.dumps(plain(value), allow_nan=False, **options)


def rewrite(path: Path, **options: Any) -> None:
    """Make the JSON file ``path`` strict in place: parsed as Python's json reads it (which
    takes NaN and Infinity), written again by :func:`dumps` (with ``options``)."""
    path = Path(path)
    path.write_text(dumps(json.loads(path.read_text()), **options))
