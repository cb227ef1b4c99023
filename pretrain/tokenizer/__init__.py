"""Multi-scale residual VQ-VAE tokenizer (VAR-compatible)."""
from pretrain.tokenizer.checkpoint import (TokenizerCheckpointError, build_tokenizer, default_tokenizer_path,
                                           from_var_state_dict, load_tokenizer, save_tokenizer, tokenizer_hash)
from pretrain.tokenizer.vqvae import MultiScaleVQVAE

__all__ = ["MultiScaleVQVAE", "build_tokenizer", "save_tokenizer", "load_tokenizer", "tokenizer_hash",
           "default_tokenizer_path", "from_var_state_dict", "TokenizerCheckpointError"]
