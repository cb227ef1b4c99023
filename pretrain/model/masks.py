"""Which scales a query may attend to: the one knob separating VAR from SRDD.

``attn_window`` None is VAR's block-causal mask (a scale-k query sees every key of
scales <= k); an int w >= 0 lets scale k see only scales k-w..k. w = 0 is SRDD's
block-diagonal Markovian mask (arXiv 2509.22636): scale k's input already carries the
cumulative state f_hat, so its own tokens are all it needs. In a depth-D stack a window
w > 0 is not Markov: information hops one window per layer, so scale k still depends on
inputs down to scale k - w*D (REFERENCE.md sec. 2).
"""
from __future__ import annotations

from typing import Optional, Sequence

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


def attn_bias(patch_nums: Sequence[int], attn_window: Optional[int]) -> torch.Tensor:
    """Additive mask (1, 1, L, L): 0 where query scale i may see key scale j, -inf elsewhere.

    Same layout and values as VAR's ``attn_bias_for_masking`` for ``attn_window=None``."""
    if attn_window is not None and attn_window < 0:
        raise ValueError(f"attn_window={attn_window}: use None (block-causal) or an int >= 0")
    q_L1 = scale_ids(patch_nums)[:, None]
    k_1L = q_L1.T
    visible = k_1L <= q_L1
    if attn_window is not None:
        visible &= k_1L >= q_L1 - attn_window
    L = len(q_L1)
    return torch.where(visible, 0.0, -torch.inf).reshape(1, 1, L, L)
