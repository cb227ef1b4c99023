"""Fréchet distance between two feature sets modelled as Gaussians (Heusel et al. 2017, eq. 6).

d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}). With the InceptionV3
pool3 features this is FID; with any other network it is FD-<net>.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg

from analysis.metrics.checks import MetricInputError, as_features

MIN_SAMPLES = 2  # an unbiased covariance needs N - 1 >= 1


class GaussianStats(NamedTuple):
    mu_D: np.ndarray
    sigma_DD: np.ndarray
    count: int


def gaussian_stats(feats_ND, name: str = "features") -> GaussianStats:
    """Mean and unbiased covariance in float64 (float32 sums lose digits at N ~ 10^4, D = 2048)."""
    x = as_features(feats_ND, name, min_samples=MIN_SAMPLES)
    return GaussianStats(x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1]), x.shape[0])


def _sqrtm_product(sigma_a: np.ndarray, sigma_b: np.ndarray, eps: float) -> np.ndarray:
    """(S_a S_b)^{1/2}; near-singular products (N <= D) retry with S + eps*I, as pytorch-fid does."""
    with warnings.catch_warnings():  # scipy's "singular" warning: handled below by the offset retry
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(sigma_a.shape[0])
        warnings.warn(f"Fréchet distance: singular covariance product; adding {eps:g} to the diagonals", RuntimeWarning, stacklevel=3)
        covmean = scipy.linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    return covmean


def frechet_distance_from_stats(a: GaussianStats, b: GaussianStats, eps: float = 1e-6, imag_tol: float = 1e-3) -> float:
    if a.mu_D.shape != b.mu_D.shape:
        raise MetricInputError(f"feature dimension mismatch: {a.mu_D.shape[0]} vs {b.mu_D.shape[0]}")
    covmean = _sqrtm_product(a.sigma_DD, b.sigma_DD, eps)
    if np.iscomplexobj(covmean):
        # Rounding makes tiny imaginary parts on PSD products; a large one means the stats are broken.
        imag = float(np.abs(covmean.imag).max())
        if imag > imag_tol:
            warnings.warn(f"Fréchet distance: sqrtm has an imaginary part {imag:.3g} > {imag_tol:g}; using the real part", RuntimeWarning, stacklevel=2)
        covmean = covmean.real
    diff = a.mu_D - b.mu_D
    d2 = diff @ diff + np.trace(a.sigma_DD) + np.trace(b.sigma_DD) - 2.0 * np.trace(covmean)
    return float(max(d2, 0.0))  # >= 0 mathematically; clip rounding noise at identical sets


def frechet_distance(feats_a_ND, feats_b_MD) -> float:
    """Fréchet distance between two (samples, features) arrays; each needs >= 2 samples."""
    a = gaussian_stats(feats_a_ND, "feats_a")
    b = gaussian_stats(feats_b_MD, "feats_b")
    return frechet_distance_from_stats(a, b)


class FrechetToReference:
    """Fréchet distance of many feature sets to one fixed reference (a study's methods x seeds).

    Tr (S_a S_r)^{1/2} = Tr (S_r^{1/2} S_a S_r^{1/2})^{1/2}: with the reference's symmetric square
    root computed once, each distance needs one symmetric eigendecomposition instead of a general
    ``sqrtm`` (same value as ``frechet_distance_from_stats`` up to rounding)."""

    def __init__(self, ref: GaussianStats):
        self.ref = ref
        w, U = np.linalg.eigh(ref.sigma_DD)
        self.sqrt_ref_DD = (U * np.sqrt(np.clip(w, 0.0, None))) @ U.T

    def __call__(self, feats_ND: np.ndarray) -> float:
        a = gaussian_stats(feats_ND, "generated")
        if a.mu_D.shape != self.ref.mu_D.shape:
            raise MetricInputError(f"feature dimension mismatch: {a.mu_D.shape[0]} vs {self.ref.mu_D.shape[0]}")
        inner = self.sqrt_ref_DD @ a.sigma_DD @ self.sqrt_ref_DD
        tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum())
        diff = a.mu_D - self.ref.mu_D
        d2 = diff @ diff + np.trace(a.sigma_DD) + np.trace(self.ref.sigma_DD) - 2.0 * tr_covmean
        return float(max(d2, 0.0))

