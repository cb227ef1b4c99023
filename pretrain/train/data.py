"""Pyramid shards -> model-ready batches, with the frozen tokenizer in between.

The shards hold only token indices (one LongTensor per scale). The teacher-forcing input of
scales 1..K-1 is rebuilt here on the fly by the tokenizer's quantiser (VAR's
idxBl_to_var_input: lookup, upsample, Phi, accumulate, area-downsample), so shards stay small
and one set of shards serves any transformer.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch

from pretrain.train.step import Batch


@torch.no_grad()
def to_model_batch(vae: Any, label_B: torch.Tensor, idx_list: list[torch.Tensor], device: torch.device) -> Batch:
    """(label_B, idx per scale) -> (label_B, x_BLCv_wo_first_l, target_BL). ``vae`` may be any pyramid
    codec (pretrain/pyramid/codec.py): its codes per scale concatenate into the target the same way."""
    idx_list = [idx_Bl.to(device, non_blocking=True) for idx_Bl in idx_list]
    x_BLCv = vae.pyramid_to_var_input(idx_list)
    return label_B.to(device), x_BLCv, torch.cat(idx_list, dim=1)


def model_batches(loader: Any, vae: Any, device: torch.device) -> Iterator[Batch]:
    for label_B, idx_list in loader:
        yield to_model_batch(vae, label_B, idx_list, device)
