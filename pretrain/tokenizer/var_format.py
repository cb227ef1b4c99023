"""VAR's VQVAE state-dict layout: architecture inferred from tensor shapes, strict key/shape checks.

Keys follow VAR's ``vae_ch160v4096z32.pth`` (docs/tokenizer.md): ``encoder.*``, ``decoder.*``,
``quant_conv.*``, ``post_quant_conv.*``, ``quantize.embedding.weight``, ``quantize.quant_resi.*``.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch
from torch import nn

VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


class TokenizerCheckpointError(ValueError):
    """A tokenizer file or state dict is unreadable or does not match the architecture."""


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


def check_state_dict(vae: nn.Module, sd: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
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
