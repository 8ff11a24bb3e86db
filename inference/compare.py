"""How a candidate model's predictions compare with the live model's, row by row: the
figures the service's shadow (``serving.candidates``) exports and ``python -m clients
compare`` prints, computed the same way in both places."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
    """The running comparison of a candidate with the live model over some rows."""

    task: str
    rows: int = 0
    agreed: int = 0  # classifier: rows where both predict the same class
    diffs: list[np.ndarray] | None = None  # regressor: |candidate - live| of every row

    def add(self, live: Sequence[Any], candidate: Sequence[Any]) -> np.ndarray:
        """Add rows; returns their |diff| (regressor) or agreement (classifier) per row."""
        if self.task == "classification":
            same = agreements(live, candidate)
            self.rows += len(same)
            self.agreed += int(same.sum())
            return same
        diff = abs_diffs(live, candidate)
        self.rows += len(diff)
        self.diffs = [*(self.diffs or []), diff]
        return diff

    def figures(self) -> dict[str, Any]:
        """``rows`` and, for a regressor, ``abs_diff`` (mean, p50, p99, max, sum); for a
        classifier, ``agreed`` and ``agreement_ratio``."""
        out: dict[str, Any] = {"task": self.task, "rows": self.rows}
        if self.task == "classification":
            ratio = self.agreed / self.rows if self.rows else None
            return {**out, "agreed": self.agreed, "agreement_ratio": ratio}
        diff = np.concatenate(self.diffs) if self.diffs else np.array([], dtype=np.float64)
        if not diff.size:
            return {**out, "abs_diff": None}
        return {
            **out,
            "abs_diff": {
                "mean": float(diff.mean()),
                "p50": float(np.percentile(diff, 50)),
                "p99": float(np.percentile(diff, 99)),
                "max": float(diff.max()),
                "sum": float(diff.sum()),
            },
        }

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
