"""Sampling: the KV-cached sampler core (``sample``, ``ScaleStep``), refinement and editing."""
from pretrain.sampling.sampler import ScaleStep, guidance_weights, sample, sample_in_batches

__all__ = ["sample", "sample_in_batches", "ScaleStep", "guidance_weights"]
