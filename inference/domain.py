"""The model's domain: the values it was trained to take, beyond what its column types allow.

- **Closed categories**: a text column the trained Pipeline encodes as a fixed set (one-hot or
  ordinal) takes exactly the categories its encoder learnt, case included. Anything else the
  encoder maps to "unknown" silently (one-hot ignores it, ordinal codes it -1): a typo would
  become another diamond. Free text (TF-IDF) stays free.
- **Bounds**: the ranges the pipeline's own rules enforce on the training data (its
  preprocess's ``positive`` and ``bounds``, its data checks' ``ranges``).

Recorded once, at import (:func:`model_domain`), in the model's metadata as ``domain``:
``{column: {"categories": [...]}}`` or ``{column: {"minimum": .., "maximum": ..,
"exclusiveMinimum": .., "exclusiveMaximum": ..}}`` (JSON Schema's words, as the OpenAPI
document shows them). The categories come from the fitted Pipeline itself; the bounds from the
MLflow model's ``bounds`` metadata, which the training step writes from its config
(:func:`config_bounds`). The contract (``inference.contract``) enforces it; the settings
``TAGSERVE_UNKNOWN_CATEGORIES`` and ``TAGSERVE_OUT_OF_RANGE`` (``refuse`` by default, or
``accept``) say whether, for the service and the clients alike (:func:`policy_from_env`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DOMAIN_METADATA = "domain"
BOUNDS_METADATA = "bounds"
UNKNOWN_CATEGORIES_ENV = "TAGSERVE_UNKNOWN_CATEGORIES"
OUT_OF_RANGE_ENV = "TAGSERVE_OUT_OF_RANGE"
ACCEPT, REFUSE = "accept", "refuse"
RANGE_KEYS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")


@dataclass(frozen=True)
class Range:
    """A column's bounds, each side inclusive or exclusive (None: no bound on that side)."""

    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False
    high_exclusive: bool = False

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> Range | None:
        """From JSON Schema's words (the metadata's ``domain`` entry), or None: no bound."""
        low, high = spec.get("minimum"), spec.get("maximum")
        low_x, high_x = spec.get("exclusiveMinimum"), spec.get("exclusiveMaximum")
        low_exclusive = low_x is not None and (low is None or low_x >= low)
        high_exclusive = high_x is not None and (high is None or high_x <= high)
        found = cls(
            low_x if low_exclusive else low,
            high_x if high_exclusive else high,
            low_exclusive,
            high_exclusive,
        )
        return None if found.low is None and found.high is None else found

    def schema(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.low is not None:
            out["exclusiveMinimum" if self.low_exclusive else "minimum"] = self.low
        if self.high is not None:
            out["exclusiveMaximum" if self.high_exclusive else "maximum"] = self.high
        return out

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_exclusive else value < self.low):
            return False
        return not (
            self.high is not None
            and (value >= self.high if self.high_exclusive else value > self.high)
        )

    def describe(self) -> str:
        """``more than 0 and at most 20``: the words of an error message."""
        parts = []
        if self.low is not None:
            parts.append(f"{'more than' if self.low_exclusive else 'at least'} {_num(self.low)}")
        if self.high is not None:
            parts.append(f"{'less than' if self.high_exclusive else 'at most'} {_num(self.high)}")
        return " and ".join(parts)

    def problem(self, value: Any) -> str:
        return f"{_num(value)} is out of the model's range (it takes {self.describe()})"


def _num(value: Any) -> str:
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return f"{number:.8g}"


def category_problem(value: Any, categories: Sequence[Any]) -> str:
    """``'Superb' is not one of 'Fair', 'Good', ...``."""
    return f"{value!r} is not one of {', '.join(map(repr, categories))}"


# --- recording it (training and import) ------------------------------------------------------


def tighter(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """The bounds both ``a`` and ``b`` (JSON Schema words) impose, as JSON Schema words."""
    ra, rb = Range.of(a) or Range(), Range.of(b) or Range()
    low, low_x = _pick((ra.low, ra.low_exclusive), (rb.low, rb.low_exclusive), max)
    high, high_x = _pick((ra.high, ra.high_exclusive), (rb.high, rb.high_exclusive), min)
    return Range(low, high, low_x, high_x).schema()


def _pick(a: tuple[Any, bool], b: tuple[Any, bool], best: Any) -> tuple[Any, bool]:
    if a[0] is None:
        return b
    if b[0] is None:
        return a
    if a[0] == b[0]:
        return a[0], a[1] or b[1]  # the same number: exclusive is the tighter
    return a if best(a[0], b[0]) == a[0] else b


def config_bounds(
    clean: Mapping[str, Any] | None, checks: Mapping[str, Any] | None, columns: Sequence[str]
) -> dict[str, dict[str, float]]:
    """The bounds the pipeline's preprocess (``clean``: ``positive``, ``bounds``) and data
    checks (``checks``: ``ranges``) enforce on the training data, for ``columns`` (the
    model's inputs; a rule on the target is not the model's domain)."""
    clean, checks = dict(clean or {}), dict(checks or {})
    found: dict[str, dict[str, float]] = {}

    def add(column: str, spec: Mapping[str, Any]) -> None:
        if column in columns and Range.of(spec) is not None:
            found[column] = tighter(found.get(column, {}), spec)

    for column in clean.get("positive") or []:
        add(column, {"exclusiveMinimum": 0})
    for column, bound in (clean.get("bounds") or {}).items():
        add(column, {"minimum": (bound or {}).get("min"), "maximum": (bound or {}).get("max")})
    for column, pair in (checks.get("ranges") or {}).items():
        low, high = pair
        add(column, {"minimum": low, "maximum": high})
    return found


def pipeline_categories(pipeline: Any) -> dict[str, list[Any]]:
    """The categories the fitted sklearn ``pipeline`` encodes as a fixed set, per input column:
    each OneHotEncoder's or OrdinalEncoder's ``categories_`` inside its ColumnTransformer, as
    trained (a missing value the encoder learnt is left out: null is the imputer's)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    found: dict[str, list[Any]] = {}
    steps = pipeline.steps if isinstance(pipeline, Pipeline) else [("model", pipeline)]
    for _, step in steps:
        if not isinstance(step, ColumnTransformer):
            continue
        for _, transformer, columns in getattr(step, "transformers_", []):
            chain = transformer.steps if isinstance(transformer, Pipeline) else [(0, transformer)]
            encoders = [t for _, t in chain if isinstance(t, OneHotEncoder | OrdinalEncoder)]
            if not encoders or isinstance(columns, slice) or not isinstance(columns, list | tuple):
                continue
            for column, categories in zip(columns, encoders[-1].categories_, strict=False):
                found[str(column)] = [_plain(c) for c in categories if not _missing(c)]
    return found


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def model_domain(
    pipeline: Any, types: Mapping[str, str], bounds: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """The domain recorded at import: closed categories of the text columns (``types``: the
    signature's column -> MLflow type) from the fitted ``pipeline``, and ``bounds`` (the MLflow
    model's ``bounds`` metadata) of its number columns."""
    domain: dict[str, dict[str, Any]] = {}
    for column, categories in pipeline_categories(pipeline).items():
        if types.get(column) == "string" and categories:
            domain[column] = {"categories": [str(c) for c in categories]}
    numbers = {"double", "float", "long", "integer"}
    for column, spec in (bounds or {}).items():
        if types.get(column) in numbers and isinstance(spec, Mapping):
            found = Range.of(spec)
            if found is not None:
                domain[column] = found.schema()
    return domain


# --- enforcing it ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """Whether values outside the domain are refused (400 / exit != 0) or served as before."""

    refuse_unknown_categories: bool = True
    refuse_out_of_range: bool = True


def env_choice(name: str) -> bool:
    """True (refuse, the default) or False (accept) from the environment variable ``name``."""
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", REFUSE):
        return True
    if raw == ACCEPT:
        return False
    raise ValueError(f"{name} must be {ACCEPT} or {REFUSE}, not {raw!r}")


def policy_from_env() -> Policy:
    """``TAGSERVE_UNKNOWN_CATEGORIES`` and ``TAGSERVE_OUT_OF_RANGE`` (``accept|refuse``): the
    service's settings, and the clients' (score, spark) through the same variables."""
    return Policy(env_choice(UNKNOWN_CATEGORIES_ENV), env_choice(OUT_OF_RANGE_ENV))


# --- the CSV form of a bounded number (the OpenAPI document's CSV pattern) -------------------

# A CSV number's integer digits and fraction digits at most, as inference.contract's patterns.
INT_DIGITS, FRACTION_DIGITS = 9, 8


def int_range_pattern(low: int, high: int) -> str:
    """A regular expression of the integers ``low`` to ``high`` (0 <= low <= high), written
    without leading zeros: per digit count, aligned blocks (``4[0-9]``, ``80``)."""
    parts = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        start = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        end = min(high, 10**digits - 1)
        if digits > 1 and (start, end) == (10 ** (digits - 1), 10**digits - 1):
            parts.append(f"[1-9][0-9]{{{digits - 1}}}")  # every number of this many digits
            continue
        while start <= end:
            width = 0  # the largest aligned block of 10**width numbers from start within end
            while start % 10 ** (width + 1) == 0 and start + 10 ** (width + 1) - 1 <= end:
                width += 1
            prefix = str(start)[: len(str(start)) - width] if width else str(start)
            parts.append(prefix + "[0-9]" * width)
            start += 10**width
    return "|".join(parts)


def range_csv_pattern(bounds: Range, whole: bool) -> str | None:
    """A regular expression of plain CSV numbers (decimal notation) within ``bounds``: every
    such integer, every fraction but near a non-integer upper bound or just above a lower
    one's first decimal (a subset there: a regular expression states no numeric order), or
    None where it cannot say (a bound below 0, or no lower bound)."""
    from decimal import Decimal

    if bounds.low is None or bounds.low < 0:
        return None
    low, high = Decimal(repr(float(bounds.low))), bounds.high
    top = Decimal(10**INT_DIGITS - 1) if high is None else Decimal(repr(float(high)))
    first = int(low) + 1 if bounds.low_exclusive or low != int(low) else int(low)
    # the top integer takes no fraction if the bound is it (or below the next fraction)
    last = int(top) - 1 if bounds.high_exclusive and top == int(top) else int(top)
    zeros = rf"(\.0{{1,{FRACTION_DIGITS}}})?"
    any_fraction = rf"(\.[0-9]{{1,{FRACTION_DIGITS}}})?"
    alternatives = []
    if first <= last - 1:
        tail = zeros if whole else any_fraction
        alternatives.append(f"({int_range_pattern(first, last - 1)}){tail}")
    if first <= last:
        alternatives.append(f"{last}{zeros}")
    if not whole and int(low) < first:  # values between the lower bound and the next integer
        below = int(low)
        if bounds.low_exclusive and low == below:
            alternatives.append(rf"{below}\.[0-9]{{0,{FRACTION_DIGITS - 1}}}[1-9]")
        else:
            tenths = (low - below) * 10
            digit = int(tenths) if tenths == int(tenths) and not bounds.low_exclusive else None
            digit = int(tenths) + 1 if digit is None else digit
            if digit <= 9 and below + Decimal(digit) / 10 < top:
                alternatives.append(rf"{below}\.[{digit}-9][0-9]{{0,{FRACTION_DIGITS - 1}}}")
    return "|".join(alternatives) or None
