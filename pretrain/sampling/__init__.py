"""Sampling: the KV-cached sampler core (``sample``, ``ScaleStep``), refinement and editing.
Imported lazily so that loading the config schema (``pretrain.sampling.config``) does not
import torch."""
from __future__ import annotations

from pretrain.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "pretrain.sampling.sampler": ["sample", "sample_in_batches", "ScaleStep", "guidance_weights"],
})
