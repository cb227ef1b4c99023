"""Tokenizer files: build from config, save/load, VAR state dicts, hashes.

The project's tokenizer file is one ``torch.save`` dict
``{"format": "srdd-tokenizer-v1", "config": <tokenizer section>, "state_dict": <VAR layout>}``.
A bare VAR state dict (e.g. the released ``vae_ch160v4096z32.pth``) loads too: its
architecture is inferred from tensor shapes (REFERENCE.md sec. 1).
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from data_pipeline.tario import file_sha256
from pretrain.config import SRDDConfig, home_dir
from pretrain.outputs import atomic_path
from pretrain.tokenizer.config import TokenizerConfig
from pretrain.tokenizer.vqvae import MultiScaleVQVAE

FORMAT = "srdd-tokenizer-v1"
VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
# Constructor arguments of MultiScaleVQVAE, i.e. the architecture part of the config section.
ARCH_KEYS = ("ch", "ch_mult", "num_res_blocks", "z_channels", "vocab_size", "patch_nums",
             "share_quant_resi", "quant_resi", "beta", "norm_groups")


class TokenizerCheckpointError(ValueError):
    """A tokenizer file or state dict is unreadable or does not match the architecture."""


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
                   tokenizer_cfg: TokenizerConfig | Mapping[str, Any]) -> Path:
    """Write the tokenizer file atomically; the config records the model's actual architecture."""
    config = dataclasses.asdict(tokenizer_cfg) if dataclasses.is_dataclass(tokenizer_cfg) else dict(tokenizer_cfg)
    config.update(vae.arch)
    state_dict = {k: v.detach().cpu().clone() for k, v in vae.state_dict().items()}
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


# ---- VAR state dicts --------------------------------------------------------------------
def _indices(sd: Mapping[str, Any], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def infer_var_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture from tensor shapes: ch, ch_mult, num_res_blocks, z_channels, vocab_size, Phi sharing."""
    need = ("encoder.conv_in.weight", "quant_conv.weight", "quantize.embedding.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        raise TokenizerCheckpointError(f"not a VAR VQVAE state dict: missing {missing}")
    ch = sd["encoder.conv_in.weight"].shape[0]
    levels = _indices(sd, r"encoder\.down\.(\d+)\.")
    if not levels or levels != list(range(len(levels))):
        raise TokenizerCheckpointError(f"encoder.down levels {levels} are not 0..n-1")
    ch_mult = [sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels]
    num_res_blocks = len(_indices(sd, r"encoder\.down\.0\.block\.(\d+)\."))
    vocab_size, z_channels = sd["quantize.embedding.weight"].shape
    shared = _indices(sd, r"quantize\.quant_resi\.qresi_ls\.(\d+)\.")
    non_shared = _indices(sd, r"quantize\.quant_resi\.(\d+)\.")
    if shared:
        share, ratio = len(shared), 0.5
    elif "quantize.quant_resi.qresi.weight" in sd:
        share, ratio = 1, 0.5
    elif non_shared:
        share, ratio = 0, 0.5
    else:  # no Phi weights: VAR's quant_resi = 0 (identity refiners)
        share, ratio = 4, 0.0
    return dict(ch=int(ch), ch_mult=ch_mult, num_res_blocks=num_res_blocks, z_channels=int(z_channels),
                vocab_size=int(vocab_size), share_quant_resi=share, quant_resi=ratio, norm_groups=32,
                **({"patch_nums": list(VAR_PATCH_NUMS[:len(non_shared)])} if share == 0 else {}))


def check_state_dict(vae: MultiScaleVQVAE, sd: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Strict key/shape comparison; the error lists missing, unexpected and mis-shaped keys."""
    own = vae.state_dict()
    hits = "quantize.ema_vocab_hit_SV"  # per-schedule statistics: any K is accepted (as VAR)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    misshaped = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in sorted(set(own) & set(sd))
                 if tuple(sd[k].shape) != tuple(own[k].shape) and not (k == hits and sd[k].shape[1:] == own[k].shape[1:])]
    if missing or unexpected or misshaped:
        def show(name: str, items: list[str]) -> str:
            more = f" ... (+{len(items) - 8} more)" if len(items) > 8 else ""
            return f"\n  {name} ({len(items)}): {', '.join(items[:8])}{more}" if items else ""
        raise TokenizerCheckpointError(
            f"{source} does not match the tokenizer architecture {vae.arch}:"
            + show("missing", missing) + show("unexpected", unexpected) + show("mis-shaped", misshaped))


def from_var_state_dict(sd: Mapping[str, torch.Tensor], patch_nums: Sequence[int] = VAR_PATCH_NUMS,
                        source: str = "VAR state dict", **overrides: Any) -> MultiScaleVQVAE:
    """Build a model whose architecture is inferred from ``sd`` (``overrides`` win) and load it strictly."""
    kwargs = {**infer_var_config(sd), "patch_nums": list(patch_nums), **overrides}
    vae = MultiScaleVQVAE(**kwargs)
    check_state_dict(vae, sd, source)
    vae.load_state_dict(dict(sd))
    return vae.eval()
