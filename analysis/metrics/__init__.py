"""Quality metrics on feature arrays (plain functions) and the feature networks that produce them.

Feature arrays are (samples, features); probabilities are (samples, classes)
softmax outputs. Every function checks its input (NaN/inf, too few samples,
dimension mismatch) and raises ``MetricInputError`` naming the problem.
"""
from analysis.metrics.checks import MetricInputError
from analysis.metrics.frechet import GaussianStats, frechet_distance, frechet_distance_from_stats, gaussian_stats
from analysis.metrics.inception_score import inception_score
from analysis.metrics.kid import kernel_distance
from analysis.metrics.precision_recall import precision_recall

__all__ = [
    "MetricInputError", "GaussianStats", "gaussian_stats", "frechet_distance", "frechet_distance_from_stats",
    "inception_score", "precision_recall", "kernel_distance",
]
