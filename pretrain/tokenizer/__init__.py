"""Multi-scale residual VQ-VAE tokenizer (VAR-compatible). Public API, imported lazily so that
loading the config schema (which imports ``pretrain.tokenizer.config``) does not import torch."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MultiScaleVQVAE": "pretrain.tokenizer.vqvae",
    "build_tokenizer": "pretrain.tokenizer.checkpoint",
    "save_tokenizer": "pretrain.tokenizer.checkpoint",
    "load_tokenizer": "pretrain.tokenizer.checkpoint",
    "tokenizer_hash": "pretrain.tokenizer.checkpoint",
    "default_tokenizer_path": "pretrain.tokenizer.checkpoint",
    "from_var_state_dict": "pretrain.tokenizer.checkpoint",
    "TokenizerCheckpointError": "pretrain.tokenizer.checkpoint",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pretrain.tokenizer' has no attribute {name!r}")
