"""Model from config: ``build_model(cfg.model, vocab_size, z_channels, patch_nums)``."""
from __future__ import annotations

from typing import Optional, Sequence

from pretrain.config.model import ModelConfig
from pretrain.model.transformer import Transformer
from pretrain.sizes import SIZES


def build_model(model_cfg: ModelConfig, vocab_size: int, z_channels: int, patch_nums: Sequence[int],
                size: Optional[str] = None, refine_inputs: bool = False) -> Transformer:
    """The transformer of size ``model_cfg.size`` (or ``size``; a row of pretrain/sizes.py) for a
    tokenizer's vocab/Cvae/schedule, with self-correction inputs when ``refine_inputs`` (runs trained
    with ``train.refine_objective``). Build under ``torch.device("meta")`` to count without memory."""
    row = SIZES[size or model_cfg.size]
    return Transformer(vocab_size=vocab_size, z_channels=z_channels, patch_nums=patch_nums, depth=row.depth,
                       width=row.width, heads=row.heads, num_classes=model_cfg.num_classes,
                       mlp_ratio=model_cfg.mlp_ratio, drop_path=model_cfg.drop_path, cond_drop=model_cfg.cond_drop,
                       attn_window=model_cfg.window, init_std=model_cfg.init_std,
                       attn_impl=model_cfg.attn_impl, refine_inputs=refine_inputs)
