"""Convolutional encoder/decoder of the VQ-VAE (the taming/LDM "vq-f16" design VAR uses).

Module names and nesting mirror VAR's ``basic_vae`` exactly (``down.{i}.block.{j}``,
``mid.attn_1``, ``up.{i}.upsample.conv`` ...), so a VAR state dict loads key for key.
Numerics follow it too: GroupNorm(eps=1e-6) + SiLU pre-activation residual blocks,
single-head self-attention over the last level (fused 1x1 ``qkv`` conv), stride-2
downsampling with right/bottom zero padding, nearest-neighbour 2x upsampling + conv.
Dropout is always 0 in VAR's tokenizer and has no parameters, so it is left out.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


def silu(x: torch.Tensor) -> torch.Tensor:
    """In place when no graph is recorded (tokenization): saves one activation-sized write per call."""
    return F.silu(x, inplace=not torch.is_grad_enabled())


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1)


class ResnetBlock(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))), 1x1 shortcut when the width changes."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = conv3x3(c_in, c_out)
        self.norm2 = group_norm(c_out, groups)
        self.conv2 = conv3x3(c_out, c_out)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, kernel_size=1) if c_in != c_out else nn.Identity()

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        h = self.conv1(silu(self.norm1(x_BChw)))
        h = self.conv2(silu(self.norm2(h)))
        return self.nin_shortcut(x_BChw) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a fused qkv 1x1 conv (VAR's key layout)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BChw.shape
        qkv_B3CL = self.qkv(self.norm(x_BChw)).view(B, 3, C, H * W)
        q_BLC, k_BLC, v_BLC = qkv_B3CL.transpose(2, 3).unbind(1)
        # softmax(q k^T / sqrt(C)) v, one head of width C
        h_BLC = F.scaled_dot_product_attention(q_BLC, k_BLC, v_BLC)
        return x_BChw + self.proj_out(h_BLC.transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one zero row/column at the bottom/right."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x_BChw, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x_BChw, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution: residual blocks, attention after each block on the last level, resampler."""

    def __init__(self, widths: Sequence[tuple[int, int]], attn: bool, resample: str | None, groups: int):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(ci, co, groups) for ci, co in widths)
        self.attn = nn.ModuleList(AttnBlock(co, groups) for _, co in widths) if attn else nn.ModuleList()
        c_out = widths[-1][1]
        if resample == "down":
            self.downsample = Downsample(c_out)
        elif resample == "up":
            self.upsample = Upsample(c_out)

    def blocks(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class Middle(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """img_B3HW -> z_BChw with h = H / 2**(len(ch_mult)-1)."""

    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 groups: int, in_channels: int = 3):
        super().__init__()
        n = len(ch_mult)
        self.conv_in = conv3x3(in_channels, ch)
        self.down = nn.ModuleList()
        c = ch
        for i, m in enumerate(ch_mult):
            widths = [(c if j == 0 else ch * m, ch * m) for j in range(num_res_blocks)]
            self.down.append(Level(widths, attn=i == n - 1, resample="down" if i < n - 1 else None, groups=groups))
            c = ch * m
        self.mid = Middle(c, groups)
        self.norm_out = group_norm(c, groups)
        self.conv_out = conv3x3(c, z_channels)

    def forward(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(img_B3HW)
        for level in self.down:
            h = level.blocks(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(silu(self.norm_out(h)))


class Decoder(nn.Module):
    """z_BChw -> img_B3HW (unclamped); ``up`` is stored finest-first, run coarsest-first."""

    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 groups: int, out_channels: int = 3):
        super().__init__()
        n = len(ch_mult)
        c = ch * ch_mult[-1]
        self.conv_in = conv3x3(z_channels, c)
        self.mid = Middle(c, groups)
        levels: list[Level] = []
        for i in reversed(range(n)):
            widths = [(c if j == 0 else ch * ch_mult[i], ch * ch_mult[i]) for j in range(num_res_blocks + 1)]
            levels.insert(0, Level(widths, attn=i == n - 1, resample="up" if i > 0 else None, groups=groups))
            c = ch * ch_mult[i]
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(c, groups)
        self.conv_out = conv3x3(c, out_channels)

    def forward(self, z_BChw: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z_BChw))
        for level in reversed(self.up):
            h = level.blocks(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(silu(self.norm_out(h)))
