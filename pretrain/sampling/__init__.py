"""Sampling: the KV-cached sampler core (``sample``, ``ScaleStep``); refinement, the batched
``sample.*`` loop, run loading, output files and editing are the package's other modules."""
from pretrain.sampling.sampler import ScaleStep, guidance_weights, sample

__all__ = ["sample", "ScaleStep", "guidance_weights"]
