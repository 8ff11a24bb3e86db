"""The two drift tests' statistics and p-values with NumPy and ``scipy.special`` only, equal
to what ``scipy.stats`` gives for the calls ``inference.drift`` makes (the tests compare them on
many samples): ``ks_2samp(a, b)`` (two-sided, ``method="auto"``) and
``chi2_contingency(table)`` (Yates' correction on a 2 x 2 table, as by default).

Why not ``scipy.stats`` itself: importing it loads most of SciPy (optimize, integrate, sparse,
linalg...), resident for as long as the process lives, in every replica whose monitoring leads,
for two functions. The algorithms are the ones scipy.stats runs, step for step, so that the
floating-point results are the same:

- KS, exact (both samples at most ``MAX_EXACT_N``): the share of lattice paths that leave the
  band the statistic draws (Hodges 1958; computed as 1 - p directly, Viehmann 2021); equal sizes
  by the closed alternating sum. A band too long to walk in Python (``MAX_BAND_STEPS``: mid-size
  samples that differ) is left to scipy.stats, imported for it. Otherwise, or when the exact
  sum fails, the distribution of the one-sample statistic for ``n = round(n1 n2 / (n1 + n2))``
  (Simard and L'Ecuyer 2011: Durbin's matrix, Pomeranz's recursion, Pelz-Good's series, or
  ``scipy.special.smirnov``).
- Chi-square: expected counts from the margins, Pearson's statistic, ``chdtrc``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

MAX_EXACT_N = 10_000  # scipy's "auto": exact p-value when neither sample is larger
# The exact p-value of samples of different sizes walks a band of the lattice, one step at a
# time in Python: beyond these steps scipy.stats' compiled walk is used instead (imported then).
MAX_BAND_STEPS = 1_000_000

# Scaling of the large intermediate products, as scipy.stats does it (extended precision).
E128 = 128
EP128 = np.ldexp(np.longdouble(1), E128)
EM128 = np.ldexp(np.longdouble(1), -E128)
MIN_LOG = -708
SQRT2PI = np.sqrt(2 * np.pi)
LOG_2PI = np.log(2 * np.pi)
SQRT3 = np.sqrt(3)
PI_2, PI_4, PI_6 = np.pi**2, np.pi**4, np.pi**6
# Stirling's series: B_2j / (2j (2j-1)) for j = 8, ..., 1.
STIRLING = [
    -2.955065359477124183e-2,
    6.4102564102564102564e-3,
    -1.9175269175269175269e-3,
    8.4175084175084175084e-4,
    -5.952380952380952381e-4,
    7.9365079365079365079e-4,
    -2.7777777777777777778e-3,
    8.3333333333333333333e-2,
]


# --- Kolmogorov-Smirnov, two samples ------------------------------------------------------


def ks_2samp(a: Any, b: Any) -> tuple[float, float]:
    """The two-sided two-sample KS statistic and p-value of ``a`` and ``b`` (non-empty, no
    missing values): ``scipy.stats.ks_2samp(a, b)``'s."""
    a, b = np.sort(np.asarray(a)), np.sort(np.asarray(b))
    n1, n2 = a.shape[0], b.shape[0]
    if min(n1, n2) == 0:
        raise ValueError("a two-sample KS test needs values on both sides")
    both = np.concatenate([a, b])
    diffs = (
        np.searchsorted(a, both, side="right") / n1 - np.searchsorted(b, both, side="right") / n2
    )
    below = np.clip(-diffs[np.argmin(diffs)], 0, 1)
    above = diffs[np.argmax(diffs)]
    d = below if below > above else above
    prob = None
    if max(n1, n2) <= MAX_EXACT_N:
        if n1 != n2 and band_steps(n1, n2, float(d)) > MAX_BAND_STEPS:
            from scipy import stats

            result = stats.ks_2samp(a, b)
            return float(result.statistic), float(result.pvalue)
        d, prob = exact_2samp(n1, n2, float(d))
    if prob is None:
        m, n = sorted([float(n1), float(n2)], reverse=True)
        prob = kolmogorov_sf(float(np.round(m * n / (m + n))), float(d))
    return float(np.float64(d)), float(np.clip(prob, 0, 1))


def exact_2samp(n1: int, n2: int, d: float) -> tuple[float, float | None]:
    """The statistic on the lattice of both samples' steps and its exact p-value (None when
    the computation loses itself in floating point)."""
    g = math.gcd(n1, n2)
    lcm = (n1 // g) * n2
    h = int(np.round(d * lcm))
    d = h * 1.0 / lcm
    if h == 0:
        return d, 1.0
    try:
        with np.errstate(invalid="raise", over="raise"):
            prob = outside_square(n1, h) if n1 == n2 else outside_band(n1, n2, g, h)
    except (FloatingPointError, OverflowError):
        return d, None
    return (d, prob) if 0 <= prob <= 1 else (d, None)


def band_steps(n1: int, n2: int, d: float) -> int:
    """How many steps :func:`outside_band` takes (at most) for statistic ``d``."""
    m, n = max(n1, n2), min(n1, n2)
    g = math.gcd(n1, n2)
    h = int(np.round(d * (n1 // g) * n2))
    return m * min(2 * math.ceil(h / (m // g)) + 2, n + 1)


def outside_square(n: int, h: int) -> float:
    """P(D_{n,n} >= h/n): 2 (C(2n, n-h) - C(2n, n-2h) + ...) / C(2n, n), by Horner's scheme
    on the ratios (the plain alternating sum cancels)."""
    p = 0.0
    k = int(np.floor(n / h))
    while k >= 0:
        ratio = 1.0
        for j in range(h):
            ratio = (n - k * h - j) * ratio / (n + k * h + j + 1)
        p = ratio * (1.0 - p)
        k -= 1
    return 2 * p


def outside_band(m: int, n: int, g: int, h: int) -> float:
    """The share of the lattice paths from (0, 0) to (m, n) that touch or leave the band
    |x/m - y/n| < h / lcm(m, n): one column of path shares at a time, in the sliding window
    of rows the band allows, each entry carrying 1 - share (numerically stable)."""
    if m < n:
        m, n = n, m
    mg, ng = m // g, n // g
    low, high = 0, min(int(np.ceil(h / mg)), n + 1)
    width = high - low
    column = [1.0] * min(2 * high + 2, n + 1)
    for j in range(low, high):
        column[j] = 0.0
    for i in range(1, m + 1):
        last_low, last_width = low, width
        low = min(max(int(np.floor((ng * i - h) / mg)) + 1, 0), n)
        high = min(int(np.ceil((ng * i + h) / mg)), n + 1)
        if high <= low:
            return 1.0
        value = 0.0 if low == 0 else 1.0
        for k in range(high - low):
            j = k + low
            value = (column[k + low - last_low] * i + value * j) / (i + j)
            column[k] = value
        width = high - low
        for k in range(width, min(last_width, len(column))):
            column[k] = 1.0  # rows the band left: every path through them is outside
    return float(column[high - low - 1])


# --- the one-sample Kolmogorov distribution's survival function ----------------------------


def kolmogorov_sf(n: float, x: float) -> float:
    """P(D_n > x) for the two-sided one-sample statistic of ``n`` values (an integer in a
    float): ``scipy.stats.kstwo.sf(x, n)``."""
    if not (n >= 1 and n == np.round(n)) or math.isnan(x):
        return math.nan
    if x <= 0.5 / n:  # at or below the support's start
        return 1.0
    if x >= 1.0:
        return 0.0
    return float(kolmogn_sf(int(n), x))


def clipped(p: Any) -> Any:
    return np.clip(p, 0.0, 1.0)


def kolmogn_sf(n: int, x: float) -> Any:
    """The survival function, by the method Simard and L'Ecuyer choose for (n, x)."""
    t = n * x
    if t <= 1.0:  # Ruben-Gambino
        if t <= 0.5:
            return clipped(1.0)
        if n <= 140:
            prob = np.prod(np.arange(1, n + 1) * (1.0 / n) * (2 * t - 1))
        else:
            prob = np.exp(log_factorial_over_power(n) + n * np.log(2 * t - 1))
        return clipped(1.0 - prob)
    if t >= n - 1:  # Ruben-Gambino
        return clipped(2 * (1.0 - x) ** n)
    if x >= 0.5:
        return clipped(2 * special.smirnov(n, x))
    nx2 = t * x
    if n <= 140:
        if nx2 <= 0.754693:
            return clipped(1.0 - durbin_cdf(n, x))
        if nx2 <= 4:
            return clipped(1.0 - pomeranz_cdf(n, x))
        return clipped(2 * special.smirnov(n, x))
    if nx2 >= 370.0:
        return 0.0
    if nx2 >= 2.2:
        return clipped(2 * special.smirnov(n, x))
    cdf = durbin_cdf(n, x) if n <= 100000 and n * x**1.5 <= 1.4 else pelz_good_cdf(n, x)
    return clipped(1.0 - cdf)


def log_factorial_over_power(n: int) -> Any:
    """log(n! / n^n) by Stirling's series (n log n taken out first: no cancellation)."""
    rn = 1.0 / n
    return np.log(n) / 2 - n + LOG_2PI / 2 + rn * np.polyval(STIRLING, rn / n)


def durbin_cdf(n: int, d: float) -> Any:
    """P(D_n <= d) by Durbin's matrix (Marsaglia, Tsang and Wang 2003): a power of an
    m x m matrix, m = 2k - 1, rescaled as it grows."""
    if d >= 1.0:
        return clipped(1.0)
    nd = n * d
    if nd <= 0.5:
        return clipped(0.0)
    k = int(np.ceil(nd))
    h = k - nd
    m = 2 * k - 1
    H = np.zeros([m, m])  # noqa: N806
    steps = np.arange(1, m + 1)
    v = 1.0 - h**steps
    w = np.empty(m)
    fac = 1.0
    for j in steps:
        w[j - 1] = fac
        fac /= j
        v[j - 1] *= fac
    tt = max(2 * h - 1.0, 0) ** m - 2 * h**m
    v[-1] = (1.0 + tt) * fac
    for i in range(1, m):
        H[i - 1 :, i] = w[: m - i + 1]
    H[:, 0] = v
    H[-1, :] = np.flip(v, axis=0)
    power = np.eye(np.shape(H)[0])
    remaining, scale, h_scale = n, 0, 0
    while remaining > 0:
        if remaining % 2:
            power = np.matmul(power, H)
            scale += h_scale
        H = np.matmul(H, H)  # noqa: N806
        h_scale *= 2
        if np.abs(H[k - 1, k - 1]) > EP128:
            H /= EP128  # noqa: N806
            h_scale += E128
        remaining = remaining // 2
    p = power[k - 1, k - 1]
    for i in range(1, n + 1):  # times n! / n^n
        p = i * p / n
        if np.abs(p) < EM128:
            p *= EP128
            scale -= E128
    if scale != 0:
        p = np.ldexp(p, scale)
    return clipped(p)


def pomeranz_bounds(i: int, n: int, ll: int, ceilf: int, roundf: int) -> tuple[int, int]:
    """The first and last non-zero entries of row ``i`` of Pomeranz's recursion."""
    if i == 0:
        j1, j2 = -ll - ceilf - 1, ll + ceilf - 1
    else:
        half, odd = divmod(i + 1, 2)
        if odd == 0:
            if half == n + 1:
                j1, j2 = n - ll - ceilf - 1, n + ll + ceilf - 1
            else:
                j1, j2 = half - 1 - ll - roundf - 1, half + ll - 1 + ceilf - 1
        else:
            j1, j2 = half - 1 - ll - 1, half + ll + roundf - 1
    return max(j1 + 2, 0), min(j2, n)


def pomeranz_cdf(n: int, x: float) -> Any:
    """P(D_n <= x) by Pomeranz's recursion (1974): each row the previous one convolved with
    Poisson-like weights, two rows kept, rescaled as they shrink."""
    t = n * x
    ll = int(np.floor(t))
    f = 1.0 * (t - ll)
    g = min(f, 1.0 - f)
    ceilf, roundf = (1 if f > 0 else 0), (1 if f > 0.5 else 0)
    npwrs = 2 * (ll + 1)
    gpower, twogpower, onem2gpower = np.empty(npwrs), np.empty(npwrs), np.empty(npwrs)
    gpower[0] = twogpower[0] = onem2gpower[0] = 1.0
    scale = 0
    g_n, two_g_n, one_minus_two_g_n = g / n, 2 * g / n, (1 - 2 * g) / n
    for m in range(1, npwrs):
        gpower[m] = gpower[m - 1] * g_n / m
        twogpower[m] = twogpower[m - 1] * two_g_n / m
        onem2gpower[m] = onem2gpower[m - 1] * one_minus_two_g_n / m
    row0, row1 = np.zeros([npwrs]), np.zeros([npwrs])
    row1[0] = 1
    start0, start1 = 0, 0
    j1, j2 = pomeranz_bounds(0, n, ll, ceilf, roundf)
    for i in range(1, 2 * n + 2):
        k1 = j1
        row0, row1 = row1, row0
        start0, start1 = start1, start0
        row1.fill(0.0)
        j1, j2 = pomeranz_bounds(i, n, ll, ceilf, roundf)
        # the first and last rows' weights, then alternating
        ends = i == 1 or i == 2 * n + 1
        weights = gpower if ends else (twogpower if i % 2 else onem2gpower)
        ln2 = j2 - k1 + 1
        if ln2 > 0:
            conv = np.convolve(row0[k1 - start0 : k1 - start0 + ln2], weights[:ln2])
            row1[: j2 - j1 + 1] = conv[j1 - k1 : j1 - k1 + j2 - j1 + 1]
            if 0 < np.max(row1) < EM128:
                row1 *= EP128
                scale -= E128
            start1 = start0 + j1 - k1
    ans = row1[n - start1]
    for m in range(1, n + 1):  # times n!
        if np.abs(ans) > EP128:
            ans *= EM128
            scale += E128
        ans *= m
    if scale != 0:
        ans = np.ldexp(ans, scale)
    return clipped(ans)


def pelz_good_cdf(n: int, x: float) -> Any:
    """P(D_n <= x) by Pelz and Good's series (1976) in z = x sqrt(n)."""
    if x <= 0.0:
        return clipped(0.0)
    if x >= 1.0:
        return clipped(1.0)
    z = np.sqrt(n) * x
    z2, z3, z4, z6 = z**2, z**3, z**4, z**6
    qlog = -PI_2 / 8 / z2
    if qlog < MIN_LOG:
        return clipped(0.0)
    q = np.exp(qlog)
    k1a, k1b = -z2, PI_2 / 4
    k2a, k2b, k2c = 6 * z6 + 2 * z4, (2 * z4 - 5 * z2) * PI_2 / 4, PI_4 * (1 - 2 * z2) / 16
    k3d = PI_6 * (5 - 30 * z2) / 64
    k3c = PI_4 * (-60 * z2 + 212 * z4) / 16
    k3b = PI_2 * (135 * z4 - 96 * z6) / 4
    k3a = -30 * z6 - 90 * z**8
    terms = np.zeros(4)
    maxk = int(np.ceil(16 * z / np.pi))
    for k in range(maxk, 0, -1):  # Horner's scheme on the odd squares
        m = 2 * k - 1
        m2, m4, m6 = m**2, m**4, m**6
        coeffs = np.array(
            [
                1.0,
                k1a + k1b * m2,
                k2a + k2b * m2 + k2c * m4,
                k3a + k3b * m2 + k3c * m4 + k3d * m6,
            ]
        )
        terms *= np.power(q, 8 * k)
        terms += coeffs
    terms *= q
    terms *= SQRT2PI
    terms /= np.array([z, 6 * z4, 72 * z**7, 6480 * z**10])
    q = np.exp(-PI_2 / 2 / z2)
    ks = np.arange(maxk, 0, -1)
    ks2 = ks**2
    sqrt3z, kspi = SQRT3 * z, np.pi * ks
    qpowers = q**ks2
    terms[2] += np.sum(ks2 * qpowers) * (PI_2 * SQRT2PI / (-36 * z3))
    terms[3] += np.sum((sqrt3z + kspi) * (sqrt3z - kspi) * ks2 * qpowers) * (
        PI_2 * SQRT2PI / (216 * z6)
    )
    terms /= np.power(n * 1.0, np.arange(len(terms)) / 2.0)
    return sum(terms)


# --- chi-square test of homogeneity -------------------------------------------------------


def chi2_contingency(table: Any) -> tuple[float, float]:
    """Pearson's chi-square test of independence on a contingency table of counts (2-D, no
    zero margin), Yates' correction on one degree of freedom:
    ``scipy.stats.chi2_contingency(table)``'s statistic and p-value."""
    observed = np.asarray(table, dtype=np.float64)
    if np.any(observed < 0) or observed.size == 0 or observed.ndim != 2:
        raise ValueError("a contingency table is a 2-D table of non-negative counts")
    rows = np.sum(observed, axis=1, keepdims=True)
    columns = np.sum(observed, axis=0, keepdims=True)
    expected = rows * columns / observed.sum()
    if np.any(expected == 0):
        raise ValueError("a row or column of the table holds no count")
    dof = expected.size - sum(expected.shape) + expected.ndim - 1
    if dof == 0:
        return 0.0, 1.0
    if dof == 1:  # Yates: each count moved half a unit towards its expectation
        diff = expected - observed
        observed = observed + np.minimum(0.5, np.abs(diff)) * np.sign(diff)
    terms = ((observed - expected) ** 2 / expected).ravel()
    statistic = np.sum(terms)
    return float(statistic), float(special.chdtrc(float(dof), statistic))
