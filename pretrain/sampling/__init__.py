"""Sampling: the KV-cached sampler core (``sample``, ``ScaleStep``), refinement and editing.
Imported lazily so that loading the config schema (``pretrain.sampling.config``) does not
import torch."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "sample": "pretrain.sampling.sampler",
    "ScaleStep": "pretrain.sampling.sampler",
    "guidance_weights": "pretrain.sampling.sampler",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pretrain.sampling' has no attribute {name!r}")
