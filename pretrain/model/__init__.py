"""The next-scale transformer (VAR layout, attention window for SRDD)."""
from pretrain.model.build import build_model
from pretrain.model.kv_cache import KVCache
from pretrain.model.masks import attn_bias
from pretrain.model.transformer import VAR_PATCH_NUMS, Transformer, VarStateDictError

__all__ = ["Transformer", "VarStateDictError", "VAR_PATCH_NUMS", "build_model", "KVCache", "attn_bias"]
