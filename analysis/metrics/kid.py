"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3,
averaged over random subsets so that its cost stays O(subset^2)."""
from __future__ import annotations

import numpy as np

from analysis.metrics.checks import MetricInputError, as_features, same_dim


def _poly_kernel(a_ND: np.ndarray, b_MD: np.ndarray) -> np.ndarray:
    k = a_ND @ b_MD.T
    k /= a_ND.shape[1]
    k += 1.0
    return k * k * k  # not ** 3: numpy's float power is a per-element pow() call, several times slower


def mmd2_unbiased(x_ND: np.ndarray, y_ND: np.ndarray) -> float:
    """Unbiased MMD^2 estimate (diagonals of the within-set kernels excluded)."""
    n, m = x_ND.shape[0], y_ND.shape[0]
    k_xx, k_yy, k_xy = _poly_kernel(x_ND, x_ND), _poly_kernel(y_ND, y_ND), _poly_kernel(x_ND, y_ND)
    return float((k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
                 + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
                 - 2.0 * k_xy.mean())


def kernel_distance(real_ND, fake_MD, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float | None]:
    """(mean, std) of the unbiased MMD^2 over ``subsets`` random subsets of min(subset_size, N, M) samples.

    The std measures the spread between subsets, which exists only when both subsets are proper
    subsets of their sets: when a subset is a whole set (subset_size >= N or >= M) every draw
    shares it, so the std is None (not reported) and, when both are whole, one subset is computed."""
    real = as_features(real_ND, "real", min_samples=2)
    fake = as_features(fake_MD, "fake", min_samples=2)
    same_dim(real, fake, ("real", "fake"))
    if subsets < 1:
        raise MetricInputError(f"subsets={subsets} must be >= 1")
    size = min(subset_size, real.shape[0], fake.shape[0])
    proper = size < real.shape[0] and size < fake.shape[0]
    if size == real.shape[0] and size == fake.shape[0]:
        subsets = 1  # every subset is the same pair of whole sets
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(real[rng.choice(real.shape[0], size, replace=False)], fake[rng.choice(fake.shape[0], size, replace=False)])
            for _ in range(subsets)]
    return float(np.mean(vals)), (float(np.std(vals)) if proper else None)
