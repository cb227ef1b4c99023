"""VAR's self-attention: fused qkv, L2-normalised q/k with a learnable per-head temperature.

State-dict keys (per block ``blocks.i.attn.``): ``mat_qkv.weight`` (3C x C, no bias),
``q_bias``, ``v_bias`` (C), ``zero_k_bias`` (buffer, C zeros: keys get no bias),
``scale_mul_1H11`` (log of the per-head logit scale, init log 4, capped at log 100),
``proj.weight``/``proj.bias``. With q and k unit-normalised the softmax scale is
exp(scale_mul) instead of 1/sqrt(head_dim) (VAR's ``attn_l2_norm=True``, used by all its models).

How the normalised q, k, v are attended is the caller's ``attend``: teacher forcing passes the
mask's path (``model.attn_impl``: the additive -inf mask, or tiles that skip the hidden pairs,
pretrain/model/tiled_attention.py); a KV-cached scale pass passes none (all its keys are visible).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

# Extends this layer's keys/values with cached ones: (k_BHlc, v_BHlc) -> (k_BHLc, v_BHLc).
KVExtend = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# Attention of normalised, scaled q against k, v, softmax scale 1: (q_BHLc, k_BHLc, v_BHLc) -> out_BHLc.
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def masked_attention(q_BHLc: torch.Tensor, k_BHLc: torch.Tensor, v_BHLc: torch.Tensor,
                     bias_11LL: torch.Tensor) -> torch.Tensor:
    """The dense reference: all L x L pairs, hidden ones set to -inf by the additive mask."""
    return F.scaled_dot_product_attention(q_BHLc, k_BHLc, v_BHLc, attn_mask=bias_11LL.to(q_BHLc.dtype), scale=1.0)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width={width} must be divisible by heads={heads}")
        self.num_heads, self.head_dim = heads, width // heads
        self.mat_qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width))
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, heads, 1, 1), 4.0).log())
        self.max_scale_mul = math.log(100.0)
        self.proj = nn.Linear(width, width)

    def forward(self, x_BLC: torch.Tensor, attend: Optional[Attend] = None,
                kv_extend: Optional[KVExtend] = None) -> torch.Tensor:
        """``attend`` applies teacher forcing's mask; ``kv_extend`` prepends cached keys/values
        (sampling: the queries are one scale, the keys that scale plus its visible prefix, no mask)."""
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q_BHLc, k_BHLc, v_BHLc = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        scale_mul_1H11 = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
        q_BHLc = F.normalize(q_BHLc, dim=-1).mul(scale_mul_1H11)
        k_BHLc = F.normalize(k_BHLc, dim=-1)
        if kv_extend is not None:
            k_BHLc, v_BHLc = kv_extend(k_BHLc, v_BHLc)
        if attend is None:
            out_BHLc = F.scaled_dot_product_attention(q_BHLc, k_BHLc, v_BHLc, scale=1.0)
        else:
            out_BHLc = attend(q_BHLc, k_BHLc, v_BHLc)
        return self.proj(out_BHLc.transpose(1, 2).reshape(B, L, C))
