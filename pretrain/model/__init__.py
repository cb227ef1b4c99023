"""The next-scale transformer (VAR layout, attention window for SRDD). Public API, imported
lazily so that loading the config schema (which imports ``pretrain.model.config``) does not
import torch."""
from __future__ import annotations

from pretrain.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "pretrain.model.transformer": ["Transformer", "VarStateDictError", "VAR_PATCH_NUMS"],
    "pretrain.model.build": ["build_model"],
    "pretrain.model.kv_cache": ["KVCache"],
    "pretrain.model.masks": ["attn_bias"],
})
