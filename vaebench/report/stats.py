"""Means, standard deviations and Student-t confidence intervals, without scipy.

The report needs one quantile: the two-sided t critical value for n - 1 degrees of freedom, where n is
a number of seeds or of paired runs (small: 2 to a few dozen). For integer degrees of freedom the
t distribution's central probability P(|T| <= t) has a closed form (Abramowitz & Stegun 26.7.3-4),
which is inverted here by bisection to machine precision. That keeps the report's only statistical
dependency a dozen lines that the tests check against published table values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple


def t_central_probability(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer `df` >= 1 (A&S 26.7.3 odd df, 26.7.4 even df)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:  # sin(theta) * (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... up to cos^(df-2))
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return s * total
    # odd: 2/pi * (theta + sin(theta) cos(theta) (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ... up to cos^(df-3)))
    if df == 1:
        return 2.0 * theta / math.pi
    term, total = 1.0, 1.0
    for k in range(1, (df - 1) // 2):
        term *= c2 * (2 * k) / (2 * k + 1)
        total += term
    return 2.0 / math.pi * (theta + s * math.cos(theta) * total)


def t_critical(df: int, confidence: float = 0.95) -> float:
    """The t such that P(|T| <= t) = confidence: 12.706 for df=1, 2.776 for df=4, -> 1.960 as df grows."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    lo, hi = 0.0, 1.0
    while t_central_probability(hi, df) < confidence:
        hi *= 2.0
    for _ in range(200):  # bisection; stops when the interval no longer shrinks in float64
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if t_central_probability(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class MeanCI(NamedTuple):
    """Mean of n finite values, their sample std (ddof=1) and the t interval of the mean.

    std and the interval are NaN when n < 2 (one seed says nothing about the spread); everything is
    NaN when n == 0.
    """

    mean: float
    std: float
    n: int
    low: float
    high: float


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> MeanCI:
    """mean +- t_{df=n-1} * std / sqrt(n), ignoring NaN and None values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return MeanCI(math.nan, math.nan, 0, math.nan, math.nan)
    mean = math.fsum(xs) / n
    if n < 2:
        return MeanCI(mean, math.nan, 1, math.nan, math.nan)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_critical(n - 1, confidence) * std / math.sqrt(n)
    return MeanCI(mean, std, n, mean - half, mean + half)
