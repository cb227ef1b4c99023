"""Multi-scale residual vector quantiser (VAR, arXiv 2404.02905, Alg. 1 and 2).

Encoding a latent f (Cvae x h x w, h = w = patch_nums[-1]) over K scales:
for k = 0..K-1, area-downsample the residual to pn_k x pn_k, pick the nearest
code under L2 over un-normalised embeddings, look it up, bicubic-upsample it to
h x w (not on the last scale), apply Phi_k, add it to f_hat and subtract it from
the residual. Phi_k(h) = (1 - r) h + r conv3x3(h) with r = ``quant_resi``.

Which Phi conv serves scale k (VAR's "tick" rule): with n convs, ticks are
linspace(1/(3n), 1 - 1/(3n), n) when n == 4 (VAR's default, 1/12 .. 11/12) and
linspace(1/(2n), 1 - 1/(2n), n) otherwise; scale k of K uses the conv whose tick
is nearest to k / (K - 1) (the first on a tie). A single-scale schedule (K = 1)
uses position 1.0, the last conv.

State-dict layout, as VAR: ``embedding.weight`` (V x Cvae); the Phi convs under
``quant_resi.qresi_ls.{i}`` (n >= 2 shared), ``quant_resi.qresi`` (n = 1) or
``quant_resi.{i}`` (n = 0: one per scale); the ``ema_vocab_hit_SV`` buffer
(K x V, per-scale code hit counts, EMA'd during training).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Phi(nn.Conv2d):
    """Phi(h) = (1 - r) h + r conv3x3(h): the per-scale refiner after upsampling."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, kernel_size=3, stride=1, padding=1)
        self.ratio = abs(ratio)

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw * (1 - self.ratio) + super().forward(h_BChw) * self.ratio


def phi_ticks(n: int) -> np.ndarray:
    return np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n) if n == 4 else np.linspace(1 / 2 / n, 1 - 1 / 2 / n, n)


def phi_index(k: int, num_scales: int, n: int) -> int:
    at = k / (num_scales - 1) if num_scales > 1 else 1.0
    return int(np.argmin(np.abs(phi_ticks(n) - at)))


class PartiallyShared(nn.Module):
    """``qresi_ls.{i}``: n shared convs picked by the tick rule (VAR share_quant_resi >= 2)."""

    def __init__(self, phis: list[nn.Module]):
        super().__init__()
        self.qresi_ls = nn.ModuleList(phis)

    def pick(self, k: int, num_scales: int) -> nn.Module:
        return self.qresi_ls[phi_index(k, num_scales, len(self.qresi_ls))]


class FullyShared(nn.Module):
    """``qresi``: one conv for every scale (VAR share_quant_resi = 1)."""

    def __init__(self, phi: nn.Module):
        super().__init__()
        self.qresi = phi

    def pick(self, k: int, num_scales: int) -> nn.Module:
        return self.qresi


class NonShared(nn.ModuleList):
    """``{i}``: one conv per scale of the training schedule (VAR share_quant_resi = 0)."""

    def pick(self, k: int, num_scales: int) -> nn.Module:
        return self[phi_index(k, num_scales, len(self))]


def build_phis(channels: int, ratio: float, share: int, num_scales: int) -> nn.Module:
    def one() -> nn.Module:
        return Phi(channels, ratio) if abs(ratio) > 1e-6 else nn.Identity()

    if share == 0:
        return NonShared([one() for _ in range(num_scales)])
    if share == 1:
        return FullyShared(one())
    return PartiallyShared([one() for _ in range(share)])


class ResidualQuantizer(nn.Module):
    def __init__(self, vocab_size: int, Cvae: int, patch_nums: Sequence[int], beta: float = 0.25,
                 quant_resi: float = 0.5, share_quant_resi: int = 4):
        super().__init__()
        self.vocab_size, self.Cvae, self.beta = vocab_size, Cvae, beta
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.quant_resi = build_phis(Cvae, quant_resi, share_quant_resi, len(self.patch_nums))
        self.embedding = nn.Embedding(vocab_size, Cvae)
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), vocab_size))

    # ---- one scale ------------------------------------------------------------
    def nearest_code(self, z_NC: torch.Tensor) -> torch.Tensor:
        """argmin_v |z - e_v|^2, expanded as |z|^2 + |e|^2 - 2 z.e (VAR's order of operations,
        so ties and near-ties resolve to the same code)."""
        E_VC = self.embedding.weight.detach()
        d_NV = z_NC.square().sum(1, keepdim=True) + E_VC.square().sum(1)
        return torch.addmm(d_NV, z_NC, E_VC.T, beta=1, alpha=-2).argmin(1)

    def scale_contribution(self, h_BCpp: torch.Tensor, k: int, patch_nums: Sequence[int]) -> torch.Tensor:
        """Phi_k(upsample(h)) at the final side: what scale k adds to f_hat."""
        K, side = len(patch_nums), patch_nums[-1]
        if k != K - 1:
            h_BCpp = F.interpolate(h_BCpp, size=(side, side), mode="bicubic")
        return self.quant_resi.pick(k, K)(h_BCpp)

    def lookup(self, idx_Bl: torch.Tensor, pn: int) -> torch.Tensor:
        """Token map (B, pn*pn) -> embeddings (B, Cvae, pn, pn)."""
        B = idx_Bl.shape[0]
        return self.embedding(idx_Bl).transpose(1, 2).reshape(B, self.Cvae, pn, pn)

    # ---- whole pyramid ----------------------------------------------------------
    def quantize(self, f_BChw: torch.Tensor, patch_nums: Sequence[int], with_fhat: bool = True,
                 upto: int | None = None, prefix: Sequence[torch.Tensor] = ()
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Alg. 1 without gradients to f, over the first ``upto`` scales (all by default). Returns
        (idx per scale (B, pn*pn), f_hat after each scale (empty unless ``with_fhat``), the
        residual each scale quantised (N, Cvae)). ``prefix``: codes of the first scales, taken as
        given instead of the nearest ones; the later scales quantise the residual they leave (scale
        distillation keeps a teacher's codes)."""
        B, C, H, W = f_BChw.shape
        K = len(patch_nums)
        last = K if upto is None else upto
        f_rest = f_BChw.detach().clone()
        f_hat = torch.zeros_like(f_rest)
        idx_list: list[torch.Tensor] = []
        fhats: list[torch.Tensor] = []
        rests: list[torch.Tensor] = []
        for k, pn in enumerate(patch_nums[:last]):
            rest = F.interpolate(f_rest, size=(pn, pn), mode="area") if k != K - 1 else f_rest
            rest_NC = rest.permute(0, 2, 3, 1).reshape(-1, C)
            idx_N = prefix[k].reshape(-1) if k < len(prefix) else self.nearest_code(rest_NC)
            idx_list.append(idx_N.view(B, pn * pn))
            rests.append(rest_NC)
            if k == last - 1 and not with_fhat:
                break  # the last contribution only matters for f_hat
            h = self.scale_contribution(self.lookup(idx_list[-1], pn), k, patch_nums)
            f_hat = f_hat + h
            f_rest = f_rest - h
            if with_fhat:
                fhats.append(f_hat)
        return idx_list, fhats, rests

    def forward(self, f_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Training pass: (straight-through f_hat, vq loss, idx per scale, residual vectors).

        Loss per scale k on the running f_hat (VAR): beta * |sg(f_hat) - f|^2 (commitment,
        trains the encoder) + |f_hat - sg(f)|^2 (codebook + Phi), averaged over scales. The
        returned f_hat = f + sg(f_hat - f) passes the decoder's gradient straight through the
        whole residual quantiser to the encoder.
        """
        f_BChw = f_BChw.float()
        B, C, H, W = f_BChw.shape
        f_ng = f_BChw.detach()
        K = len(self.patch_nums)
        f_hat = torch.zeros_like(f_ng)
        f_rest = f_ng.clone()
        vq_loss = f_BChw.new_zeros(())
        idx_list, rests = [], []
        for k, pn in enumerate(self.patch_nums):
            rest = F.interpolate(f_rest, size=(pn, pn), mode="area") if k != K - 1 else f_rest
            rest_NC = rest.permute(0, 2, 3, 1).reshape(-1, C)
            idx_Bl = self.nearest_code(rest_NC).view(B, pn * pn)
            h = self.scale_contribution(self.lookup(idx_Bl, pn), k, self.patch_nums)
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            vq_loss = vq_loss + self.beta * F.mse_loss(f_hat.detach(), f_BChw) + F.mse_loss(f_hat, f_ng)
            idx_list.append(idx_Bl)
            rests.append(rest_NC)
        f_st = f_BChw + (f_hat.detach() - f_ng)
        return f_st, vq_loss / K, idx_list, rests
