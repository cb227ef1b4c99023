"""Attention that computes only the (query, key) pairs the scale mask allows (docs/model.md).

Every query scale sees one contiguous key range (pretrain/model/masks.py ``attention_tiles``),
so masked attention is a list of unmasked attentions, one per tile: window 0 (SRDD) is
per-scale attention, window w and block-causal (VAR) give each scale its visible prefix.
Tiles of identical shape (window 0 with repeated scale sizes) are stacked along the batch and
run as one call.

CPU: one autograd function calls torch's fused CPU flash-attention kernel per tile group and
writes outputs and gradients straight into full-length tensors. Autograd over slices instead
pays one zero-filled full-length gradient per slice and tensor (30% of the attention backward
at 512 px, measured). FlexAttention has no CPU backward in torch 2.13, so it cannot train here.
Other devices: ``F.scaled_dot_product_attention`` per tile under autograd; with no mask CUDA
takes its flash / memory-efficient kernels.

The softmax scale is 1: VAR's q already carries its learned per-head scale (attention.py).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from pretrain.model.masks import Tile

TileGroup = tuple[Tile, ...]  # tiles of one shape, run as one batched call

_FLASH_CPU = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_FLASH_CPU_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def group_tiles(tiles: Sequence[Tile]) -> tuple[TileGroup, ...]:
    """Tiles grouped by (queries, keys) shape, first appearance first."""
    groups: dict[tuple[int, int], list[Tile]] = {}
    for t in tiles:
        groups.setdefault((t.q_end - t.q_begin, t.k_end - t.k_begin), []).append(t)
    return tuple(tuple(g) for g in groups.values())


def _gather(x_BHLc: torch.Tensor, group: TileGroup, side: str) -> torch.Tensor:
    """The group's query (side "q") or key (side "k") ranges of x (dim 2), stacked along the batch."""
    ranges = [(t.q_begin, t.q_end) if side == "q" else (t.k_begin, t.k_end) for t in group]
    if len(ranges) == 1:
        return x_BHLc[:, :, ranges[0][0]:ranges[0][1]]
    return torch.cat([x_BHLc[:, :, a:b] for a, b in ranges], dim=0)


def _scatter(dst: torch.Tensor, src: torch.Tensor, group: TileGroup, side: str, accumulate: bool = False) -> None:
    """Inverse of ``_gather`` along dim 2 of ``dst`` (written, or added to with ``accumulate``)."""
    for t, part in zip(group, src.chunk(len(group), dim=0)):
        a, b = (t.q_begin, t.q_end) if side == "q" else (t.k_begin, t.k_end)
        if accumulate:
            dst[:, :, a:b] += part
        else:
            dst[:, :, a:b] = part


class _CpuTiledAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q_BHLc: torch.Tensor, k_BHLc: torch.Tensor, v_BHLc: torch.Tensor,
                groups: tuple[TileGroup, ...]) -> torch.Tensor:
        B, H, L, c = q_BHLc.shape
        out_BHLc = q_BHLc.new_empty(B, L, H, c).transpose(1, 2)  # the kernel's own layout: no copy after
        lse_BHL = q_BHLc.new_empty(B, H, L, dtype=torch.float32)
        for group in groups:
            o, lse = _FLASH_CPU(_gather(q_BHLc, group, "q"), _gather(k_BHLc, group, "k"), _gather(v_BHLc, group, "k"),
                                scale=1.0)
            _scatter(out_BHLc, o, group, "q")
            _scatter(lse_BHL, lse, group, "q")
        ctx.save_for_backward(q_BHLc, k_BHLc, v_BHLc, out_BHLc, lse_BHL)
        ctx.groups = groups
        return out_BHLc

    @staticmethod
    def backward(ctx: Any, dout_BHLc: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for group in ctx.groups:
            gq, gk, gv = _FLASH_CPU_BACKWARD(
                _gather(dout_BHLc, group, "q"), _gather(q, group, "q"), _gather(k, group, "k"), _gather(v, group, "k"),
                _gather(out, group, "q"), _gather(lse, group, "q"), 0.0, False, scale=1.0)
            _scatter(dq, gq, group, "q")  # every query lies in exactly one tile
            _scatter(dk, gk, group, "k", accumulate=True)  # a key is seen by every later scale in its window
            _scatter(dv, gv, group, "k", accumulate=True)
        return dq, dk, dv, None


def _sdpa_tiles(q_BHLc: torch.Tensor, k_BHLc: torch.Tensor, v_BHLc: torch.Tensor,
                groups: tuple[TileGroup, ...]) -> torch.Tensor:
    outs: dict[int, torch.Tensor] = {}
    for group in groups:
        o = F.scaled_dot_product_attention(_gather(q_BHLc, group, "q"), _gather(k_BHLc, group, "k"),
                                           _gather(v_BHLc, group, "k"), scale=1.0)
        outs.update({t.q_begin: part for t, part in zip(group, o.chunk(len(group), dim=0))})
    return torch.cat([outs[q] for q in sorted(outs)], dim=2)


def tiled_attention(q_BHLc: torch.Tensor, k_BHLc: torch.Tensor, v_BHLc: torch.Tensor,
                    groups: tuple[TileGroup, ...], fused_cpu: bool = True) -> torch.Tensor:
    """softmax(q k^T) v over the tiles' pairs only; ``groups`` from ``group_tiles``.

    ``fused_cpu=False`` forces the per-tile SDPA path (what non-CPU devices run) on a CPU."""
    if fused_cpu and q_BHLc.device.type == "cpu":
        return _CpuTiledAttention.apply(q_BHLc, k_BHLc, v_BHLc, groups)
    return _sdpa_tiles(q_BHLc, k_BHLc, v_BHLc, groups)
