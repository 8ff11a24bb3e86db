"""The drift tests computed without scipy.stats (``inference.stat_tests``) give scipy.stats'
statistic and p-value, on many seeded samples: every method ``ks_2samp``'s "auto" picks (exact
on equal and unequal sizes, the asymptotic distribution, the fallback when the exact sum
fails), ties, tiny samples; chi-square tables of every shape the drift test builds. Importing
and running them leaves scipy.stats unimported."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from scipy import stats

from inference import stat_tests

TOLERANCE = {"rel": 1e-12, "abs": 1e-12}
SIZES = [1, 2, 3, 5, 8, 13, 40, 100, 141, 400, 1_500, 9_999, 10_000, 10_001, 25_000]


def samples(rng: np.random.Generator, kind: str, n1: int, n2: int) -> tuple[Any, Any]:
    if kind == "same":
        return rng.normal(size=n1), rng.normal(size=n2)
    if kind == "shifted":
        return rng.normal(size=n1), rng.normal(0.4, 1.3, size=n2)
    if kind == "ties":  # few distinct values: most of both samples tie
        return rng.integers(0, 5, n1).astype(np.float64), rng.integers(0, 6, n2).astype(np.float64)
    return rng.integers(0, 1_000, n1), rng.integers(0, 1_000, n2)  # integers, as pandas gives


def assert_like_scipy(a: Any, b: Any) -> None:
    expected = stats.ks_2samp(a, b)
    statistic, p_value = stat_tests.ks_2samp(a, b)
    assert statistic == pytest.approx(float(expected.statistic), **TOLERANCE), (len(a), len(b))
    assert p_value == pytest.approx(float(expected.pvalue), **TOLERANCE), (len(a), len(b))


@pytest.mark.parametrize("kind", ["same", "shifted", "ties", "integers"])
def test_ks_equals_scipy_on_every_pair_of_sizes(kind: str) -> None:
    rng = np.random.default_rng(["same", "shifted", "ties", "integers"].index(kind))
    for n1 in SIZES:
        for n2 in SIZES:
            assert_like_scipy(*samples(rng, kind, n1, n2))


@pytest.mark.parametrize("seed", range(20))
def test_ks_equals_scipy_on_monitoring_sized_windows(seed: int) -> None:
    """Windows of a few hundred to a few thousand rows against references of every size,
    drifted or not (the band walked in Python, the compiled one, the asymptotic law)."""
    rng = np.random.default_rng(100 + seed)
    n1 = int(rng.integers(50, 5_001))
    n2 = int(rng.choice([n1, int(rng.integers(2, 9_000)), int(rng.integers(10_001, 60_000))]))
    shift = float(rng.choice([0.0, 0.05, 0.5]))
    a, b = rng.normal(shift, 1.0, n1), rng.normal(size=n2).round(int(rng.integers(0, 3)))
    assert_like_scipy(a, b)


def test_ks_falls_back_like_scipy_when_the_exact_sum_fails() -> None:
    """A difference of one step between equal small samples: the exact sum leaves [0, 1],
    both switch to the asymptotic law on the statistic rounded to the lattice."""
    a, b = np.arange(7.0), np.array([0, 1, 2, 3, 4, 5, 7.0])
    with pytest.warns(RuntimeWarning, match="Exact calculation unsuccessful"):
        expected = stats.ks_2samp(a, b)
    assert stat_tests.ks_2samp(a, b) == pytest.approx(
        (float(expected.statistic), float(expected.pvalue)), **TOLERANCE
    )


def test_kolmogorov_survival_equals_scipy_on_a_grid() -> None:
    """Every branch of the one-sample law (Ruben-Gambino, Durbin, Pomeranz, Pelz-Good,
    smirnov, 0 beyond the tail) against ``scipy.stats.kstwo.sf``."""
    for n in [1, 2, 5, 50, 140, 141, 500, 5_000, 100_000, 250_000]:
        for x in np.linspace(0.0, 1.0, 201):
            expected = float(stats.kstwo.sf(x, n))
            assert stat_tests.kolmogorov_sf(float(n), float(x)) == pytest.approx(
                expected, **TOLERANCE
            ), (n, x)


def test_ks_refuses_an_empty_sample() -> None:
    with pytest.raises(ValueError, match="both sides"):
        stat_tests.ks_2samp(np.array([]), np.array([1.0]))


@pytest.mark.parametrize("rows", [2, 3, 5, 12, 40])
def test_chi2_equals_scipy(rows: int) -> None:
    rng = np.random.default_rng(rows)
    for _ in range(40):
        table = rng.integers(0, int(rng.choice([3, 50, 10_000])), size=(rows, 2))
        table = table[table.sum(axis=1) > 0]
        if len(table) < 2 or (table.sum(axis=0) == 0).any():
            continue
        expected = stats.chi2_contingency(table.astype(np.float64))
        statistic, p_value = stat_tests.chi2_contingency(table)
        assert statistic == pytest.approx(float(expected.statistic), **TOLERANCE), table
        assert p_value == pytest.approx(float(expected.pvalue), **TOLERANCE), table


def test_chi2_refuses_a_table_with_an_empty_margin() -> None:
    with pytest.raises(ValueError, match="no count"):
        stat_tests.chi2_contingency([[0, 3], [0, 4]])


LEAN = """
import json, sys
from typing import Any

import numpy as np
from inference import drift
rng = np.random.default_rng(0)
ks = drift.ks_test(rng.normal(size=3000), rng.normal(size=40000))
small = drift.ks_test(rng.normal(size=300), rng.normal(size=200))
chi2 = drift.chi2_test({"a": 10, "b": 30}, {"a": 500, "b": 400, "c": 7})
print(json.dumps({"scipy.stats": "scipy.stats" in sys.modules, "p": ks.p_value + chi2.p_value}))
"""


def test_testing_drift_does_not_import_scipy_stats() -> None:
    """What a monitoring leader runs (a window against a large reference, a small exact one,
    categories) holds scipy.special, not scipy.stats (most of SciPy)."""
    done = subprocess.run(
        [sys.executable, "-c", LEAN], capture_output=True, text=True, timeout=120, check=True
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["p"] > 0  # the tests ran
    assert got["scipy.stats"] is False
