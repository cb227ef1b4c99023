"""Which scales a query may attend to: the one knob separating VAR from SRDD.

``attn_window`` None is VAR's block-causal mask (a scale-k query sees every key of
scales <= k); an int w >= 0 lets scale k see only scales k-w..k. w = 0 is SRDD's
block-diagonal Markovian mask (arXiv 2509.22636): scale k's input already carries the
cumulative state f_hat, so its own tokens are all it needs. In a depth-D stack a window
w > 0 is not Markov: information hops one window per layer, so scale k still depends on
inputs down to scale k - w*D (docs/model.md, "Attention window").

The visible scales of a query scale are contiguous (k-w..k), so the mask is also a list of
*tiles*, one per query scale: its queries against one contiguous key range. Attention over the
tiles (pretrain/model/tiled_attention.py) computes exactly the pairs the mask allows; the
additive mask computes all L x L and throws the hidden ones away (docs/model.md).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch


def scale_ids(patch_nums: Sequence[int]) -> torch.Tensor:
    """(L,) scale index of every token of the flattened pyramid, as VAR's ``lvl_1L``."""
    return torch.cat([torch.full((pn * pn,), k, dtype=torch.long) for k, pn in enumerate(patch_nums)])


def scale_bounds(patch_nums: Sequence[int]) -> list[tuple[int, int]]:
    """[begin, end) token range of each scale in the flattened pyramid (VAR's ``begin_ends``)."""
    bounds, begin = [], 0
    for pn in patch_nums:
        bounds.append((begin, begin + pn * pn))
        begin += pn * pn
    return bounds


def first_visible_scale(k: int, attn_window: Optional[int]) -> int:
    """Oldest scale a scale-k query sees."""
    return 0 if attn_window is None else max(0, k - attn_window)


class Tile(NamedTuple):
    """Queries [q_begin, q_end) attend to keys [k_begin, k_end) with no mask inside the tile."""
    q_begin: int
    q_end: int
    k_begin: int
    k_end: int

    @property
    def pairs(self) -> int:
        return (self.q_end - self.q_begin) * (self.k_end - self.k_begin)


def check_window(attn_window: Optional[int]) -> None:
    if attn_window is not None and attn_window < 0:
        raise ValueError(f"attn_window={attn_window}: use None (block-causal) or an int >= 0")


def attention_tiles(patch_nums: Sequence[int], attn_window: Optional[int]) -> list[Tile]:
    """One tile per scale k: its tokens against the keys of scales first_visible(k)..k."""
    check_window(attn_window)
    bounds = scale_bounds(patch_nums)
    return [Tile(begin, end, bounds[first_visible_scale(k, attn_window)][0], end)
            for k, (begin, end) in enumerate(bounds)]


def attn_bias(patch_nums: Sequence[int], attn_window: Optional[int]) -> torch.Tensor:
    """Additive mask (1, 1, L, L): 0 where query scale i may see key scale j, -inf elsewhere.

    Same layout and values as VAR's ``attn_bias_for_masking`` for ``attn_window=None``."""
    check_window(attn_window)
    q_L1 = scale_ids(patch_nums)[:, None]
    k_1L = q_L1.T
    visible = k_1L <= q_L1
    if attn_window is not None:
        visible &= k_1L >= q_L1 - attn_window
    L = len(q_L1)
    return torch.where(visible, 0.0, -torch.inf).reshape(1, 1, L, L)


def draft_stream_bias(patch_nums: Sequence[int], attn_window: Optional[int]) -> torch.Tensor:
    """Additive mask (1, 1, 2L, 2L) of the self-correction objective's two streams (docs/sampling.md):
    the clean stream (first L) under ``attn_bias``; a draft-stream query of scale k sees the clean
    keys of its visible *earlier* scales and the draft keys of its own scale, as a draft pass at
    sampling attends to the committed prefix and to itself."""
    ids = scale_ids(patch_nums)
    L = len(ids)
    q_L1, k_1L = ids[:, None], ids[None, :]
    earlier = k_1L < q_L1
    if attn_window is not None:
        earlier &= k_1L >= q_L1 - attn_window
    cross = torch.where(earlier, 0.0, -torch.inf)
    own = torch.where(k_1L == q_L1, 0.0, -torch.inf)
    hidden = torch.full((L, L), -torch.inf)
    top = torch.cat((attn_bias(patch_nums, attn_window)[0, 0], hidden), dim=1)
    return torch.cat((top, torch.cat((cross, own), dim=1)), dim=0).reshape(1, 1, 2 * L, 2 * L)
