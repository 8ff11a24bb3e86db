"""How a candidate model's predictions compare with the live model's, row by row: the
figures the service's shadow (``serving.shadow``) exports and ``python -m clients
compare`` prints, computed the same way in both places."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The buckets of |candidate - live| (in the target's units) of the service's histogram.
ABS_DIFF_BUCKETS = (0.0, 1e-9, 1e-6, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)


def abs_diffs(live: Sequence[Any], candidate: Sequence[Any]) -> np.ndarray:
    """|candidate - live| per row (a regressor's predictions), as float64."""
    a = np.asarray(live, dtype=np.float64).ravel()
    b = np.asarray(candidate, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"{a.size} live predictions against {b.size} of the candidate")
    return np.abs(b - a)


def agreements(live: Sequence[Any], candidate: Sequence[Any]) -> np.ndarray:
    """Whether the candidate predicts the live model's class, per row (a classifier)."""
    a, b = list(live), list(candidate)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} live predictions against {len(b)} of the candidate")
    return np.array([x == y for x, y in zip(a, b, strict=True)], dtype=bool)


@dataclass
class Comparison:
    """The running comparison of a candidate with the live model over some rows.

    ``rows``, ``agreed`` and a regressor's |diff| sum and max cover every row added; its
    percentiles cover the newest ``keep`` rows (None: all), so that a service shadowing for
    days holds a bounded amount (``clients compare`` keeps every row of its file).
    """

    task: str
    keep: int | None = None
    rows: int = 0
    agreed: int = 0  # classifier: rows where both predict the same class
    total: float = 0.0  # regressor: the sum of |candidate - live| over every row
    largest: float = 0.0  # regressor: the largest |candidate - live|
    diffs: deque[np.ndarray] = field(default_factory=deque)  # the newest |diff| arrays
    kept: int = 0  # rows in ``diffs``

    def add(self, live: Sequence[Any], candidate: Sequence[Any]) -> np.ndarray:
        """Add rows; returns their |diff| (regressor) or agreement (classifier) per row."""
        if self.task == "classification":
            same = agreements(live, candidate)
            self.rows += len(same)
            self.agreed += int(same.sum())
            return same
        diff = abs_diffs(live, candidate)
        self.rows += len(diff)
        if diff.size:
            self.total += float(diff.sum())
            self.largest = max(self.largest, float(diff.max()))
        self.diffs.append(diff)
        self.kept += len(diff)
        while self.keep is not None and self.kept - len(self.diffs[0]) >= self.keep:
            self.kept -= len(self.diffs.popleft())
        return diff

    def figures(self) -> dict[str, Any]:
        """``rows`` and, for a regressor, ``abs_diff`` (mean, p50, p99, max, sum; the
        percentiles over the newest ``percentile_rows``); for a classifier, ``agreed`` and
        ``agreement_ratio``."""
        out: dict[str, Any] = {"task": self.task, "rows": self.rows}
        if self.task == "classification":
            ratio = self.agreed / self.rows if self.rows else None
            return {**out, "agreed": self.agreed, "agreement_ratio": ratio}
        if not self.rows:
            return {**out, "abs_diff": None}
        recent = np.concatenate(list(self.diffs))
        return {
            **out,
            "abs_diff": {
                "mean": self.total / self.rows,
                "p50": float(np.percentile(recent, 50)),
                "p99": float(np.percentile(recent, 99)),
                "max": self.largest,
                "sum": self.total,
                "percentile_rows": int(recent.size),
            },
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The comparison as named arrays a ``.npz`` holds without pickle (:meth:`merged`
        reads them back): the running totals, and a regressor's newest |diff| values."""
        recent = np.concatenate(list(self.diffs)) if self.diffs else np.array([], np.float64)
        totals = [self.rows, self.agreed, self.total, self.largest]
        return {"totals": np.array(totals, dtype=np.float64), "diffs": recent}

    @classmethod
    def merged(cls, task: str, parts: Sequence[Mapping[str, np.ndarray]]) -> Comparison:
        """One comparison of several (each worker's :meth:`arrays`): totals summed, the
        largest |diff| the largest, the percentiles over every part's newest rows."""
        out = cls(task)
        for part in parts:
            rows, agreed, total, largest = (float(v) for v in part["totals"])
            out.rows += int(rows)
            out.agreed += int(agreed)
            out.total += total
            out.largest = max(out.largest, largest)
            if task != "classification" and len(part["diffs"]):
                out.diffs.append(np.asarray(part["diffs"], dtype=np.float64))
                out.kept += len(part["diffs"])
        return out

    def line(self) -> str:
        """The figures in one line."""
        f = self.figures()
        if self.task == "classification":
            ratio = f["agreement_ratio"]
            shown = "-" if ratio is None else f"{ratio:.4f}"
            return f"{f['rows']:,} rows: agreement {shown} ({f['agreed']:,} rows agree)"
        d = f["abs_diff"]
        if d is None:
            return f"{f['rows']:,} rows"
        return (
            f"{f['rows']:,} rows: |candidate - live| mean {d['mean']:.6g}, p50 {d['p50']:.6g}, "
            f"p99 {d['p99']:.6g}, max {d['max']:.6g}"
        )
