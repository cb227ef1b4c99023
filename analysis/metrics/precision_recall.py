"""Improved precision and recall (Kynkäänniemi et al. 2019, eq. 1-2).

Each set's manifold is the union of balls around its samples with radius the
distance to the sample's k-th nearest neighbour in the same set. Precision =
fraction of fake samples inside the real manifold; recall = fraction of real
samples inside the fake manifold.
"""
from __future__ import annotations

import numpy as np

from analysis.metrics.checks import as_features, same_dim


def _sq_dists(a_ND: np.ndarray, b_MD: np.ndarray) -> np.ndarray:
    d2 = (a_ND * a_ND).sum(1)[:, None] + (b_MD * b_MD).sum(1)[None, :] - 2.0 * a_ND @ b_MD.T
    return np.maximum(d2, 0.0)


def knn_radii_sq(x_ND: np.ndarray, k: int, batch: int = 1024) -> np.ndarray:
    """Squared distance of each sample to its k-th nearest other sample (column 0 after sorting is itself)."""
    out = np.empty(x_ND.shape[0])
    for s in range(0, x_ND.shape[0], batch):
        d2 = _sq_dists(x_ND[s:s + batch], x_ND)
        out[s:s + batch] = np.partition(d2, k, axis=1)[:, k]
    return out


def _coverage(manifold_ND: np.ndarray, radii_sq_N: np.ndarray, queries_MD: np.ndarray, batch: int) -> float:
    """Fraction of queries within radius of at least one manifold sample."""
    inside = 0
    for s in range(0, queries_MD.shape[0], batch):
        d2 = _sq_dists(queries_MD[s:s + batch], manifold_ND)
        inside += int((d2 <= radii_sq_N[None, :]).any(axis=1).sum())
    return inside / queries_MD.shape[0]


def precision_recall(real_ND, fake_MD, k: int = 3, batch: int = 1024) -> tuple[float, float]:
    """(precision, recall) with k-NN manifolds; each set needs more than k samples."""
    real = as_features(real_ND, "real", min_samples=k + 1)
    fake = as_features(fake_MD, "fake", min_samples=k + 1)
    same_dim(real, fake, ("real", "fake"))
    precision = _coverage(real, knn_radii_sq(real, k, batch), fake, batch)
    recall = _coverage(fake, knn_radii_sq(fake, k, batch), real, batch)
    return precision, recall
