"""Means over seeds with their 95% intervals: how every quality comparison of the platform is reported.

Two interval kinds, both over seeds (each seed is one independent repetition of the whole
measurement: training data order and init, or sampling and random masks):

- ``mean_ci``: Student's t over the per-seed values (n - 1 degrees of freedom), for studies whose
  seeds are the only noise they model (distill-study, edit-study, refine-study).
- the hierarchical bootstrap (``mean_interval``, ``delta_interval``): for the training study
  (docs/claims.md), where one number such as "FD of d3-srdd" carries two sources of noise, the
  training seed and the finite sample of generated images it is scored on. A replicate draws the
  seeds with replacement and, for each drawn seed, one of that run's sample-bootstrap replicates
  (images drawn with replacement, ``fd_replicates``) (Davison & Hinkley 1997, sec. 3.8). Sample
  replicates are centred (median) on the run's own estimate first (analysis/metrics/frechet.py
  ``centred_interval``): FD at a fixed number of images is biased upward, and resampling with
  replacement adds to that bias alike for every run, so it would shift intervals, not widen them.
  A difference of two means resamples the two sides with the same seed indices when the runs are
  paired (same seed = same data order and init, e.g. the VAR and SRDD run of one size),
  independently otherwise. With few seeds the seed part of a percentile interval is narrow
  (2 seeds give only 3 distinct means): ``n_seeds`` is reported beside every interval.

A difference whose interval contains 0 is "inconclusive" (``verdict``).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from analysis.metrics.frechet import FrechetToReference, GaussianStats, bootstrap_fd


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


# ---- the hierarchical bootstrap over seeds and samples ----------------------------------------
N_BOOT = 2000  # replicates of a mean over seeds (cheap: no refits)
N_SAMPLE_BOOT = 200  # replicates of one run's FD over its generated images (one eigendecomposition each)
LEVEL = 0.95


def percentile_interval(reps: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    lo, hi = np.quantile(np.asarray(reps, dtype=float), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def fd_replicates(feats_ND: np.ndarray, ref: GaussianStats, n_boot: int = N_SAMPLE_BOOT, seed: int = 0) -> np.ndarray:
    """FD of ``n_boot`` resamples (with replacement) of the generated features against the fixed reference."""
    return bootstrap_fd(FrechetToReference(ref), [np.asarray(feats_ND, dtype=np.float64)], n_boot,
                        np.random.default_rng(seed))[1]


def _centred(values_S: np.ndarray, reps: Optional[Sequence[Optional[Sequence[float]]]]) -> list[Optional[np.ndarray]]:
    """Per seed: its sample replicates moved to have the seed's own value as their median, as
    ``centred_interval`` does (None: no replicates)."""
    if reps is None:
        return [None] * len(values_S)
    out = []
    for v, r in zip(values_S, reps):
        r = None if r is None or len(r) == 0 else np.asarray(r, dtype=float)
        out.append(None if r is None else r - np.median(r) + v)
    return out


def _draw(values_S: np.ndarray, reps: list[Optional[np.ndarray]], idx_BS: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    """(B,) means over the seeds ``idx_BS`` picks, each seed contributing one random sample replicate."""
    vals_BS = values_S[idx_BS].astype(float)
    for s, r in enumerate(reps):
        if r is not None:
            hit = idx_BS == s
            vals_BS[hit] = r[rng.integers(0, len(r), int(hit.sum()))]
    return vals_BS.mean(axis=1)


def _no_spread(values_S: np.ndarray, reps: Optional[Sequence[Optional[Sequence[float]]]]) -> bool:
    """One seed and no sample replicates: nothing to resample."""
    return len(values_S) < 2 and not (reps is not None and any(r is not None and len(r) for r in reps))


def seed_replicates(values: Sequence[float], reps: Optional[Sequence[Optional[Sequence[float]]]] = None,
                    n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot,) bootstrap replicates of the mean over seeds, resampling seeds and (given ``reps``,
    one list per seed) each seed's samples."""
    values_S = np.asarray(values, dtype=float)
    if values_S.size == 0:
        raise ValueError("seed_replicates: no values")
    rng = np.random.default_rng(seed)
    idx_BS = rng.integers(0, len(values_S), (n_boot, len(values_S)))
    return _draw(values_S, _centred(values_S, reps), idx_BS, rng)


def mean_interval(values: Sequence[float], reps: Optional[Sequence[Optional[Sequence[float]]]] = None,
                  n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean over seeds, low, high) of the hierarchical bootstrap interval."""
    values_S = np.asarray(values, dtype=float)
    if _no_spread(values_S, reps):
        return float(values_S.mean()), math.nan, math.nan
    lo, hi = percentile_interval(seed_replicates(values_S, reps, n_boot, seed), level)
    return float(values_S.mean()), lo, hi


def delta_interval(a: Sequence[float], b: Sequence[float],
                   a_reps: Optional[Sequence[Optional[Sequence[float]]]] = None,
                   b_reps: Optional[Sequence[Optional[Sequence[float]]]] = None, paired: bool = True,
                   n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high). ``paired``: a[i] and b[i] share seed i and are resampled together."""
    a_S, b_S = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_S.size == 0 or b_S.size == 0:
        raise ValueError("delta_interval: a side has no values")
    if paired and a_S.size != b_S.size:
        raise ValueError(f"delta_interval: paired sides need as many seeds ({a_S.size} vs {b_S.size})")
    if _no_spread(a_S, a_reps) and _no_spread(b_S, b_reps):
        return float(a_S.mean() - b_S.mean()), math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx_a = rng.integers(0, a_S.size, (n_boot, a_S.size))
    idx_b = idx_a if paired else rng.integers(0, b_S.size, (n_boot, b_S.size))
    reps = _draw(a_S, _centred(a_S, a_reps), idx_a, rng) - _draw(b_S, _centred(b_S, b_reps), idx_b, rng)
    lo, hi = percentile_interval(reps, level)
    return float(a_S.mean() - b_S.mean()), lo, hi
