"""Means over seeds with their 95% intervals: how every quality comparison of the platform is reported.

The interval is Student's t over the per-seed values (n - 1 degrees of freedom): each seed is one
independent repetition of the whole measurement (sampling, random masks), so the spread between
seeds is the uncertainty of the mean. A difference whose interval contains 0 is "inconclusive".
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the central ``level`` t interval; NaN bounds for fewer than 2 values."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci: no values")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def verdict(low: float, high: float, better: str = "better", worse: str = "worse") -> str:
    """``better`` when the interval of a signed difference (positive = the claim holds) lies above 0,
    ``worse`` when below, else "inconclusive" (also without an interval)."""
    if low > 0:
        return better
    if high < 0:
        return worse
    return "inconclusive"
