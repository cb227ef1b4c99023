"""Means over seeds with their 95% intervals: how every quality comparison of the platform is reported.

The interval is Student's t over the per-seed values (n - 1 degrees of freedom): each seed is one
independent repetition of the whole measurement, so the spread between seeds is the uncertainty of
the mean. A training seed repeats training (data order, init) *and* the evaluation's sampling (a
different model draws different images), so the seed spread already holds both noises; resampling
each run's images on top would count the sampling noise twice (and the image bootstrap itself
inflates FD and its spread, docs/sampling.md). A difference of two means is paired seed by seed
when the seeds share what they change (VAR and SRDD of one size and seed: same data order and
init; ``paired_ci``), Welch's unequal-variance t otherwise (``welch_ci``). A difference whose
interval contains 0 is "inconclusive" (``verdict``). Fewer than 2 seeds give no interval (NaN bounds).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

LEVEL = 0.95


def mean_ci(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
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


def paired_ci(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean(a - b), low, high): a[i] and b[i] share seed i (their shared noise cancels)."""
    a_S, b_S = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_S.shape != b_S.shape:
        raise ValueError(f"paired_ci: paired sides need as many seeds ({a_S.size} vs {b_S.size})")
    return mean_ci(a_S - b_S, level)


def welch_ci(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high) of independent samples, Welch's t with Satterthwaite's degrees
    of freedom; NaN bounds when a side has fewer than 2 values."""
    from scipy import stats

    a_S, b_S = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_S.size == 0 or b_S.size == 0:
        raise ValueError("welch_ci: a side has no values")
    d = float(a_S.mean() - b_S.mean())
    if a_S.size < 2 or b_S.size < 2:
        return d, math.nan, math.nan
    va, vb = a_S.var(ddof=1) / a_S.size, b_S.var(ddof=1) / b_S.size
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    dof = (va + vb) ** 2 / (va ** 2 / (a_S.size - 1) + vb ** 2 / (b_S.size - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof) * se)
    return d, d - half, d + half
