"""Tokenizer files: build from config, save/load, VAR state dicts, hashes.

The project's tokenizer file is one ``torch.save`` dict
``{"format": "srdd-tokenizer-v1", "config": <tokenizer section>, "state_dict": <VAR layout>}``.
A bare VAR state dict (e.g. the released ``vae_ch160v4096z32.pth``) loads too: its
architecture is inferred from tensor shapes (docs/tokenizer.md).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from data_pipeline.files import file_sha256
from pretrain.config import SRDDConfig, home_dir
from pretrain.outputs import atomic_path
from pretrain.config.tokenizer import TokenizerConfig
from pretrain.tokenizer.var_format import (VAR_PATCH_NUMS, TokenizerCheckpointError, check_state_dict,
                                           infer_var_config)
from pretrain.tokenizer.vqvae import MultiScaleVQVAE

__all__ = ["FORMAT", "VAR_PATCH_NUMS", "TokenizerCheckpointError", "arch_kwargs", "build_tokenizer",
           "check_state_dict", "default_tokenizer_path", "from_var_state_dict", "infer_var_config",
           "load_tokenizer", "read_checkpoint", "save_tokenizer", "tokenizer_hash"]

FORMAT = "srdd-tokenizer-v1"
# Constructor arguments of MultiScaleVQVAE, i.e. the architecture part of the config section.
ARCH_KEYS = ("ch", "ch_mult", "num_res_blocks", "z_channels", "vocab_size", "patch_nums",
             "share_quant_resi", "quant_resi", "beta", "norm_groups")


def arch_kwargs(cfg: TokenizerConfig | Mapping[str, Any]) -> dict[str, Any]:
    d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return {k: (list(d[k]) if isinstance(d[k], (list, tuple)) else d[k]) for k in ARCH_KEYS if k in d}


def build_tokenizer(cfg: TokenizerConfig) -> MultiScaleVQVAE:
    return MultiScaleVQVAE(**arch_kwargs(cfg))


def default_tokenizer_path(cfg: SRDDConfig) -> Path:
    """``tokenizer.ckpt`` if set, else where ``srdd tokenizer-train run_name=tokenizer`` exports."""
    return Path(cfg.tokenizer.ckpt) if cfg.tokenizer.ckpt else home_dir() / "tokenizer" / "tokenizer.pt"


def tokenizer_hash(path: str | os.PathLike) -> str:
    """sha256 of the file: what pyramid shards record to tie tokens to the tokenizer that made them."""
    return file_sha256(path)


def save_tokenizer(vae: MultiScaleVQVAE, path: str | os.PathLike,
                   tokenizer_cfg: TokenizerConfig | Mapping[str, Any],
                   state_dict: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write the tokenizer file atomically; the config records the model's actual architecture.
    ``state_dict`` (default: the module's own) is what training passes when ZeRO-3 partitions ``vae``."""
    config = dataclasses.asdict(tokenizer_cfg) if dataclasses.is_dataclass(tokenizer_cfg) else dict(tokenizer_cfg)
    config.update(vae.arch)
    state_dict = {k: v.detach().cpu().clone() for k, v in (state_dict or vae.state_dict()).items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "config": config, "state_dict": state_dict}, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with errors that say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerCheckpointError(f"tokenizer checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError/EOFError/UnpicklingError/... for damaged files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TokenizerCheckpointError(
            f"tokenizer checkpoint {path} ({path.stat().st_size} bytes) cannot be read: truncated, corrupt "
            f"or not a torch weights file ({type(e).__name__}: {first})") from None


def load_tokenizer(path: str | os.PathLike, patch_nums: Sequence[int] | None = None) -> MultiScaleVQVAE:
    """Project tokenizer file or bare VAR state dict -> model in eval mode."""
    obj = read_checkpoint(path)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        kwargs = arch_kwargs(obj["config"])
        if patch_nums is not None:
            kwargs["patch_nums"] = list(patch_nums)
        vae = MultiScaleVQVAE(**kwargs)
        check_state_dict(vae, obj["state_dict"], source=str(path))
        vae.load_state_dict(obj["state_dict"])
    elif isinstance(obj, Mapping) and "quantize.embedding.weight" in obj:
        vae = from_var_state_dict(obj, patch_nums=patch_nums or VAR_PATCH_NUMS, source=str(path))
    else:
        keys = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise TokenizerCheckpointError(
            f"{path}: neither an {FORMAT} file nor a VAR VQVAE state dict (found {keys})")
    return vae.eval()


def from_var_state_dict(sd: Mapping[str, torch.Tensor], patch_nums: Sequence[int] = VAR_PATCH_NUMS,
                        source: str = "VAR state dict", **overrides: Any) -> MultiScaleVQVAE:
    """Build a model whose architecture is inferred from ``sd`` (``overrides`` win) and load it strictly."""
    return MultiScaleVQVAE.from_var_state_dict(sd, patch_nums=patch_nums, source=source, **overrides)
