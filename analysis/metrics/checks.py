"""Input checks shared by every metric: a bad feature array fails loudly, never silently skews a number."""
from __future__ import annotations

from typing import Any

import numpy as np


class MetricInputError(ValueError):
    """Features or probabilities a metric cannot be computed from; the message says why."""


def as_features(x: Any, name: str, min_samples: int = 1) -> np.ndarray:
    """``x`` as a float64 (N, D) array with at least ``min_samples`` rows and no NaN/inf."""
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if arr.ndim != 2:
        raise MetricInputError(f"{name}: expected a 2-D (samples, features) array, got shape {arr.shape}")
    if arr.shape[0] < min_samples:
        raise MetricInputError(f"{name}: {arr.shape[0]} samples, need at least {min_samples}")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise MetricInputError(f"{name}: {len(rows)} of {arr.shape[0]} samples have NaN/inf features (first row {rows[0]})")
    return arr


def same_dim(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise MetricInputError(f"feature dimension mismatch: {names[0]} has {a.shape[-1]}, {names[1]} has {b.shape[-1]}")
