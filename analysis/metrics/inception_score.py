"""Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), over ``splits`` disjoint chunks."""
from __future__ import annotations

import numpy as np

from analysis.metrics.checks import MetricInputError, as_features


def inception_score(probs_NC, splits: int = 10) -> tuple[float, float]:
    """Mean and std over splits. 1 for uniform predictions; the class count for confident balanced ones."""
    if splits < 1:
        raise MetricInputError(f"splits={splits} must be >= 1")
    p = as_features(probs_NC, "probs", min_samples=splits)
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise MetricInputError("probs: rows must be probability vectors (non-negative, summing to 1); pass softmax outputs, not logits")
    scores = []
    for chunk in np.array_split(p, splits):
        p_y = chunk.mean(axis=0, keepdims=True)
        # 0 * log 0 = 0: only positive entries contribute to the KL.
        terms = np.where(chunk > 0, chunk * (np.log(np.where(chunk > 0, chunk, 1.0)) - np.log(np.where(chunk > 0, p_y, 1.0))), 0.0)
        scores.append(np.exp(terms.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
