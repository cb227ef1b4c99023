"""Multi-scale residual VQ-VAE tokenizer (VAR-compatible). Public API, imported lazily so that
loading the config schema (which imports ``pretrain.tokenizer.config``) does not import torch."""
from __future__ import annotations

from pretrain.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "pretrain.tokenizer.vqvae": ["MultiScaleVQVAE"],
    "pretrain.tokenizer.checkpoint": ["build_tokenizer", "save_tokenizer", "load_tokenizer", "tokenizer_hash",
                                      "default_tokenizer_path", "from_var_state_dict", "TokenizerCheckpointError"],
})
