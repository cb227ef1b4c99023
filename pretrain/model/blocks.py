"""AdaLN transformer block and the AdaLN norm before the head (VAR, arXiv 2404.02905 sec. 4).

The class embedding conditions every block through ``ada_lin`` (SiLU -> Linear(C, 6C)),
read as gamma1, gamma2, scale1, scale2, shift1, shift2 in that order:
    x = x + gamma1 * attn(LN(x) * (1 + scale1) + shift1)
    x = x + gamma2 * ffn (LN(x) * (1 + scale2) + shift2)
LayerNorms carry no affine weights (eps 1e-6); the FFN is Linear -> GELU(tanh) -> Linear.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.model.attention import Attend, KVExtend, SelfAttention

NORM_EPS = 1e-6


class FFN(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x_BLC), approximate="tanh"))


def drop_path(x_BLC: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop a sample's whole residual branch with probability p (rescaled)."""
    if p == 0.0 or not training:
        return x_BLC
    keep_B11 = x_BLC.new_empty(x_BLC.shape[0], 1, 1).bernoulli_(1 - p)
    return x_BLC * keep_B11 / (1 - p)


class AdaLNSelfAttn(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        self.C, self.drop_path_p = width, drop_path
        self.attn = SelfAttention(width, heads)
        self.ffn = FFN(width, round(width * mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(width, eps=NORM_EPS, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor, attend: Optional[Attend] = None,
                kv_extend: Optional[KVExtend] = None) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond_BD).view(-1, 1, 6, self.C).unbind(2)
        h = self.attn(self.ln_wo_grad(x_BLC).mul(scale1.add(1)).add_(shift1), attend, kv_extend)
        x_BLC = x_BLC + drop_path(h.mul_(gamma1), self.drop_path_p, self.training)
        h = self.ffn(self.ln_wo_grad(x_BLC).mul(scale2.add(1)).add_(shift2))
        return x_BLC + drop_path(h.mul(gamma2), self.drop_path_p, self.training)


class AdaLNBeforeHead(nn.Module):
    """LN(x) * (1 + scale) + shift with (scale, shift) from the class embedding."""

    def __init__(self, width: int):
        super().__init__()
        self.C = width
        self.ln_wo_grad = nn.LayerNorm(width, eps=NORM_EPS, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x_BLC).mul(scale.add(1)).add_(shift)
