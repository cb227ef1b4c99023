"""Session fixtures for tokenizer artifacts (tokenizer area)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_tokenizer_ckpt(tmp_path_factory) -> Path:
    """A tokenizer file at the embedded default config (32px, patch_nums 1,2,3,4,6,8), random init
    with a fixed seed: enough for pipeline tests (pyramid shards, transformer training, sampling)."""
    import torch

    from pretrain.tokenizer.checkpoint import build_tokenizer, save_tokenizer
    from pretrain.config.tokenizer import TokenizerConfig

    cfg = TokenizerConfig()
    torch.manual_seed(0)
    vae = build_tokenizer(cfg)
    return save_tokenizer(vae, tmp_path_factory.mktemp("tokenizer") / "tokenizer.pt", cfg)


@pytest.fixture(scope="session")
def tiny_srdd_model(tiny_tokenizer_ckpt):
    """Factory: ``(cfg, vae, model)`` = a fresh d1 SRDD-mask transformer (seed 0, eval mode) over
    the tiny tokenizer. A factory, so no test mutates a model another test uses."""
    def make():
        import torch

        from pretrain.config import load_config
        from pretrain.model import build_model
        from pretrain.tokenizer import load_tokenizer

        cfg = load_config(overrides=["model.size=d1", "model.mask=srdd"])
        vae = load_tokenizer(tiny_tokenizer_ckpt)
        torch.manual_seed(0)
        return cfg, vae, build_model(cfg.model, vae.vocab_size, vae.Cvae, vae.patch_nums).eval()
    return make
