"""Metric functions vs closed forms, torchmetrics and brute-force computations; bad input rejected."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from analysis.metrics import (
    GaussianStats, MetricInputError, frechet_distance, frechet_distance_from_stats, gaussian_stats,
    inception_score, kernel_distance, precision_recall,
)


def _with_exact_stats(rng, n: int, mu_D: np.ndarray, sigma_DD: np.ndarray) -> np.ndarray:
    """Samples whose sample mean and unbiased covariance equal mu, sigma exactly (whiten, then colour)."""
    x = rng.standard_normal((n, mu_D.shape[0]))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
    return x @ np.linalg.cholesky(sigma_DD).T + mu_D


def _random_spd(rng, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fd_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).standard_normal((200, 16))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fd_equals_closed_form_for_gaussians_with_known_stats():
    rng = np.random.default_rng(1)
    d = 6
    mu_a, mu_b = rng.standard_normal(d), rng.standard_normal(d)
    var_a, var_b = rng.uniform(0.5, 3, d), rng.uniform(0.5, 3, d)
    xa = _with_exact_stats(rng, 300, mu_a, np.diag(var_a))
    xb = _with_exact_stats(rng, 400, mu_b, np.diag(var_b))
    # Commuting (diagonal) covariances: Tr(S_a + S_b - 2 sqrt(S_a S_b)) = sum (sqrt(a_i) - sqrt(b_i))^2.
    closed = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(xa, xb) == pytest.approx(closed, rel=1e-9)


def test_fd_matches_torchmetrics_and_eigenvalue_formula():
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Identity(torch.nn.Module):
        num_features = 12

        def forward(self, x):
            return x

    rng = np.random.default_rng(2)
    xa = _with_exact_stats(rng, 500, rng.standard_normal(12), _random_spd(rng, 12))
    xb = _with_exact_stats(rng, 300, rng.standard_normal(12) * 0.5, _random_spd(rng, 12))
    ours = frechet_distance(xa, xb)

    tm = FrechetInceptionDistance(feature=Identity())
    tm.update(torch.from_numpy(xa), real=True)
    tm.update(torch.from_numpy(xb), real=False)
    assert ours == pytest.approx(float(tm.compute()), rel=1e-6)

    sa, sb = np.cov(xa, rowvar=False), np.cov(xb, rowvar=False)
    eig = np.sqrt(np.linalg.eigvals(sa @ sb).astype(complex)).real.sum()  # Tr sqrt(AB) = sum sqrt(eig(AB))
    independent = np.sum((xa.mean(0) - xb.mean(0)) ** 2) + np.trace(sa) + np.trace(sb) - 2 * eig
    assert ours == pytest.approx(independent, rel=1e-6)


def test_fd_survives_singular_covariances():
    rng = np.random.default_rng(3)
    xa, xb = rng.standard_normal((5, 40)), rng.standard_normal((6, 40))  # N << D: rank-deficient covariances
    with np.errstate(all="ignore"):
        fd = frechet_distance(xa, xb)
    assert np.isfinite(fd) and fd > 0


def test_fd_warns_on_a_large_imaginary_part():
    a = GaussianStats(np.zeros(2), np.diag([1.0, -1.0]), 10)  # not PSD: sqrtm is complex
    b = GaussianStats(np.zeros(2), np.eye(2), 10)
    with pytest.warns(RuntimeWarning, match="imaginary part"):
        frechet_distance_from_stats(a, b)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((1, 4)), "need at least 2"),
    (np.full((10, 4), np.nan), "NaN"),
    (np.zeros(10), "2-D"),
])
def test_fd_rejects_bad_features(bad, match):
    with pytest.raises(MetricInputError, match=match):
        frechet_distance(bad, np.zeros((10, 4)))


def test_dimension_mismatch_is_refused():
    rng = np.random.default_rng(4)
    with pytest.raises(MetricInputError, match="dimension mismatch"):
        frechet_distance(rng.standard_normal((10, 4)), rng.standard_normal((10, 5)))
    with pytest.raises(MetricInputError, match="dimension mismatch"):
        precision_recall(rng.standard_normal((10, 4)), rng.standard_normal((10, 5)))


def test_gaussian_stats_is_float64_and_unbiased():
    x = np.random.default_rng(5).standard_normal((50, 3)).astype(np.float32)
    s = gaussian_stats(x)
    assert s.sigma_DD.dtype == np.float64 and s.count == 50
    np.testing.assert_allclose(s.sigma_DD, np.cov(x.astype(np.float64), rowvar=False, ddof=1))


def test_inception_score_uniform_is_one():
    mean, std = inception_score(np.full((100, 10), 0.1), splits=10)
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_confident_balanced_is_class_count():
    classes = 7
    labels = np.arange(classes * 30) % classes  # every split of 21 holds each class 3 times
    mean, std = inception_score(np.eye(classes)[labels], splits=10)
    assert mean == pytest.approx(classes) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_direct_kl():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((40, 5)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mean, _ = inception_score(p, splits=1)
    kl = (p * (np.log(p) - np.log(p.mean(0)))).sum(1).mean()
    assert mean == pytest.approx(np.exp(kl), rel=1e-12)


def test_inception_score_rejects_logits_and_too_few_samples():
    with pytest.raises(MetricInputError, match="softmax"):
        inception_score(np.random.default_rng(7).standard_normal((20, 4)), splits=2)
    with pytest.raises(MetricInputError, match="need at least 10"):
        inception_score(np.full((5, 4), 0.25), splits=10)


def _grid(rows: int, cols: int) -> np.ndarray:
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.stack([r.ravel(), c.ravel()], 1).astype(np.float64)


def test_precision_recall_on_constructed_manifolds():
    real = _grid(10, 10)  # unit grid: the 3rd neighbour of an interior point is at distance 1
    assert precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)
    # Fake = real rows 0-4 plus 50 far points: half the fakes are real-looking (precision 0.5); the fake
    # balls (radius 1, sqrt(2) at corners) reach real row 5 but not row 6, so recall = 60/100.
    fake = np.concatenate([real[:50], real[:50] + [0.0, 100.0]])
    assert precision_recall(real, fake, k=3) == (0.5, 0.6)


def test_precision_recall_matches_brute_force():
    rng = np.random.default_rng(8)
    real, fake = rng.standard_normal((120, 5)), rng.standard_normal((90, 5)) + 0.7
    k = 3

    def coverage(manifold, queries):
        radii = np.sort(cdist(manifold, manifold), axis=1)[:, k]
        return float(np.mean([(cdist(q[None], manifold)[0] <= radii).any() for q in queries]))

    got = precision_recall(real, fake, k=k, batch=17)  # odd batch: exercises the batching
    assert got == pytest.approx((coverage(real, fake), coverage(fake, real)))


def test_precision_recall_needs_more_than_k_samples():
    with pytest.raises(MetricInputError, match="need at least 4"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)


def test_kid_matches_torchmetrics_poly_mmd():
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(9)
    real, fake = rng.standard_normal((80, 8)), rng.standard_normal((80, 8)) + 0.3
    mean, std = kernel_distance(real, fake, subsets=1, subset_size=80)  # one subset = the full sets
    assert mean == pytest.approx(float(poly_mmd(torch.from_numpy(real), torch.from_numpy(fake))), rel=1e-9)
    assert std is None  # the subsets are the whole sets: no spread between subsets to report
    same, same_std = kernel_distance(real, rng.standard_normal((80, 8)), subsets=20, subset_size=50)
    assert abs(same) < mean / 5 and same_std > 0  # proper subsets: a real spread
    assert kernel_distance(real, fake[:60], subsets=5, subset_size=70)[1] is None  # the fake subset is its whole set


def test_frechet_to_a_fixed_reference_equals_the_general_formula():
    from analysis.metrics.frechet import FrechetToReference

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    fd = FrechetToReference(gaussian_stats(ref))
    for _ in range(3):
        g = rng.normal(0.3, 1.2, size=(80, 6))
        assert fd(g) == pytest.approx(frechet_distance(g, ref), rel=1e-6)
    assert fd(ref) == pytest.approx(0.0, abs=1e-6)
