"""The next-scale transformer (VAR layout, attention window for SRDD). Public API, imported
lazily so that loading the config schema (which imports ``pretrain.model.config``) does not
import torch."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Transformer": "pretrain.model.transformer",
    "VarStateDictError": "pretrain.model.transformer",
    "VAR_PATCH_NUMS": "pretrain.model.transformer",
    "build_model": "pretrain.model.build",
    "KVCache": "pretrain.model.kv_cache",
    "attn_bias": "pretrain.model.masks",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pretrain.model' has no attribute {name!r}")
