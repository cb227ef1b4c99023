"""``MultiScaleVQVAE``: image <-> code pyramid, with VAR's exact state-dict layout.

Keys: ``encoder.*``, ``decoder.*``, ``quant_conv.*``, ``post_quant_conv.*``,
``quantize.embedding.weight``, ``quantize.quant_resi.*``, ``quantize.ema_vocab_hit_SV``.
Images are B x 3 x H x W in [-1, 1]; the latent side is H / ``downsample`` and must equal
the last entry of the scale schedule (``patch_nums``). Every method takes an optional
``patch_nums`` so one tokenizer serves several schedules (e.g. 1,3,5,8,13,16 distilled
from VAR's ten scales); the Phi tick rule is re-evaluated for the schedule's K.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.tokenizer.backbone import Decoder, Encoder
from pretrain.tokenizer.quantizer import ResidualQuantizer
from pretrain.tokenizer.var_format import VAR_PATCH_NUMS, check_state_dict, infer_var_config


class MultiScaleVQVAE(nn.Module):
    def __init__(self, ch: int = 160, ch_mult: Sequence[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 z_channels: int = 32, vocab_size: int = 4096,
                 patch_nums: Sequence[int] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
                 share_quant_resi: int = 4, quant_resi: float = 0.5, beta: float = 0.25,
                 norm_groups: int = 32):
        super().__init__()
        # the architecture as plain values: saved with the weights, compared on load
        self.arch = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks, z_channels=z_channels,
                         vocab_size=vocab_size, patch_nums=[int(p) for p in patch_nums],
                         share_quant_resi=share_quant_resi, quant_resi=quant_resi, beta=beta, norm_groups=norm_groups)
        self.Cvae, self.vocab_size = z_channels, vocab_size
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.downsample = 2 ** (len(ch_mult) - 1)
        arch = dict(ch=ch, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks, z_channels=z_channels,
                    groups=norm_groups)
        self.encoder = Encoder(**arch)
        self.decoder = Decoder(**arch)
        self.quantize = ResidualQuantizer(vocab_size, z_channels, self.patch_nums, beta, quant_resi, share_quant_resi)
        self.quant_conv = nn.Conv2d(z_channels, z_channels, kernel_size=3, stride=1, padding=1)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, kernel_size=3, stride=1, padding=1)

    @classmethod
    def from_var_state_dict(cls, state_dict: Mapping[str, torch.Tensor], patch_nums: Sequence[int] = VAR_PATCH_NUMS,
                            source: str = "VAR state dict", **overrides: Any) -> "MultiScaleVQVAE":
        """Load a VAR VQVAE state dict strictly, architecture inferred from shapes (kwargs override)."""
        vae = cls(**{**infer_var_config(state_dict), "patch_nums": list(patch_nums), **overrides})
        check_state_dict(vae, state_dict, source)
        vae.load_state_dict(dict(state_dict))
        return vae.eval()

    # ---- checks -------------------------------------------------------------------
    def _schedule(self, patch_nums: Sequence[int] | None) -> tuple[int, ...]:
        pns = self.patch_nums if patch_nums is None else tuple(int(p) for p in patch_nums)
        if not pns or any(p <= 0 for p in pns) or list(pns) != sorted(set(pns)):
            raise ValueError(f"patch_nums={list(pns)} must be strictly increasing positive ints")
        return pns

    def check_images(self, img_B3HW: torch.Tensor, patch_nums: Sequence[int] | None = None) -> tuple[int, ...]:
        """Reject what the encoder cannot tokenise; warn on values outside [-1, 1]."""
        pns = self._schedule(patch_nums)
        if img_B3HW.ndim != 4:
            raise ValueError(f"images must be B x 3 x H x W, got shape {tuple(img_B3HW.shape)}")
        B, C, H, W = img_B3HW.shape
        if C != 3:
            raise ValueError(f"images must have 3 channels (RGB), got {C} (shape {tuple(img_B3HW.shape)}); "
                             "repeat grey images to 3 channels")
        if H % self.downsample or W % self.downsample:
            raise ValueError(f"image side {H}x{W} is not a multiple of the tokenizer's downsampling factor "
                             f"{self.downsample}")
        if H != W or H // self.downsample != pns[-1]:
            raise ValueError(f"image side {H}x{W} gives a {H // self.downsample}x{W // self.downsample} latent but "
                             f"patch_nums ends at {pns[-1]}: use {pns[-1] * self.downsample}px square images")
        lo, hi = float(img_B3HW.min()), float(img_B3HW.max())
        if lo < -1.0 - 1e-3 or hi > 1.0 + 1e-3:
            warnings.warn(f"image values span [{lo:.3g}, {hi:.3g}], outside [-1, 1]: the tokenizer expects "
                          "images normalised to [-1, 1] (x / 127.5 - 1)", stacklevel=3)
        return pns

    def _check_pyramid(self, idx_list: Sequence[torch.Tensor], pns: tuple[int, ...], upto: int | None = None) -> None:
        need = len(pns) if upto is None else upto
        if len(idx_list) < need:
            raise ValueError(f"pyramid has {len(idx_list)} scales, need {need} (patch_nums={list(pns)})")
        for k in range(need):
            if idx_list[k].ndim != 2 or idx_list[k].shape[1] != pns[k] ** 2:
                raise ValueError(f"scale {k}: expected (B, {pns[k] ** 2}) tokens, got {tuple(idx_list[k].shape)}")

    # ---- image <-> latent ---------------------------------------------------------------
    def img_to_f(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(img_B3HW))

    def fhat_to_img(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(f_hat_BChw)).clamp(-1, 1)

    # ---- the pyramid API (docs/tokenizer.md, "Python API") ------------------------------
    @torch.no_grad()
    def encode_pyramid(self, img_B3HW: torch.Tensor, patch_nums: Sequence[int] | None = None) -> list[torch.Tensor]:
        pns = self.check_images(img_B3HW, patch_nums)
        idx_list, _, _ = self.quantize.quantize(self.img_to_f(img_B3HW), pns, with_fhat=False)
        return idx_list

    def fhat_from_pyramid(self, idx_list: Sequence[torch.Tensor], upto: int | None = None,
                          patch_nums: Sequence[int] | None = None) -> torch.Tensor:
        """Cumulative latent after the first ``upto`` scales (all by default): Cvae x h x h."""
        pns = self._schedule(patch_nums)
        upto = len(pns) if upto is None else upto
        if not 0 <= upto <= len(pns):
            raise ValueError(f"upto={upto} must be in [0, {len(pns)}]")
        self._check_pyramid(idx_list, pns, upto)
        B = idx_list[0].shape[0] if idx_list else 1
        f_hat = self.quantize.embedding.weight.new_zeros(B, self.Cvae, pns[-1], pns[-1])
        for k in range(upto):
            f_hat = self.add_scale(f_hat, idx_list[k], k, pns)
        return f_hat

    def decode_pyramid(self, idx_list: Sequence[torch.Tensor], patch_nums: Sequence[int] | None = None) -> torch.Tensor:
        return self.fhat_to_img(self.fhat_from_pyramid(idx_list, patch_nums=patch_nums))

    def add_scale(self, f_hat_BChw: torch.Tensor | None, idx_Bl: torch.Tensor, k: int,
                  patch_nums: Sequence[int] | None = None) -> torch.Tensor:
        """f_hat + Phi_k(upsample(lookup(idx))) (no upsampling on the last scale)."""
        pns = self._schedule(patch_nums)
        h = self.quantize.scale_contribution(self.quantize.lookup(idx_Bl, pns[k]), k, pns)
        return h if f_hat_BChw is None else f_hat_BChw + h

    def next_input(self, f_hat_BChw: torch.Tensor, k: int, patch_nums: Sequence[int] | None = None) -> torch.Tensor:
        """Transformer input for scale k+1: f_hat area-downsampled to its side, (B, pn^2, Cvae)."""
        pns = self._schedule(patch_nums)
        pn = pns[k + 1]
        return F.interpolate(f_hat_BChw, size=(pn, pn), mode="area").flatten(2).transpose(1, 2)

    @torch.no_grad()
    def requantize(self, f_hat_BChw: torch.Tensor, upto: int, patch_nums: Sequence[int] | None = None
                   ) -> list[torch.Tensor]:
        """The forward process from an estimate: residual-quantise ``f_hat`` (Alg. 1) on the first
        ``upto`` scales. Their tokens are the Markov state SRDD re-enters at step ``upto``
        (docs/sampling.md, "Restart"); ``fhat_from_pyramid(tokens, upto)`` is that state."""
        pns = self._schedule(patch_nums)
        if not 0 <= upto <= len(pns):
            raise ValueError(f"upto={upto} must be in [0, {len(pns)}]")
        if upto == 0:
            return []
        idx_list, _, _ = self.quantize.quantize(f_hat_BChw, pns, with_fhat=False, upto=upto)
        return idx_list

    def draft_delta(self, idx_Bl: torch.Tensor, keep_Bl: torch.Tensor, k: int,
                    patch_nums: Sequence[int] | None = None) -> torch.Tensor:
        """What committing the kept tokens of a draft of scale k adds to scale k's input, (B, pn_k^2, Cvae):
        Phi_k(upsample(lookup(idx) * keep)) area-downsampled back to pn_k. Scale k's input plus this is
        the state after the kept draft, at scale k's side (area-downsampling is linear); a removed
        (masked) token contributes no code. The self-correction pass reads it (docs/sampling.md)."""
        pns = self._schedule(patch_nums)
        pn = pns[k]
        emb_BCpp = self.quantize.lookup(idx_Bl, pn) * keep_Bl.view(-1, 1, pn, pn).to(self.quantize.embedding.weight.dtype)
        h = self.quantize.scale_contribution(emb_BCpp, k, pns)
        return F.interpolate(h, size=(pn, pn), mode="area").flatten(2).transpose(1, 2)

    def pyramid_to_var_input(self, idx_list: Sequence[torch.Tensor], patch_nums: Sequence[int] | None = None
                             ) -> torch.Tensor:
        """Teacher-forcing input x_BLCv for scales 1..K-1 (VAR's idxBl_to_var_input):
        L = sum(pn^2) - pn_0^2 rows, scale k's rows = f_hat over scales < k at pn_k x pn_k."""
        pns = self._schedule(patch_nums)
        self._check_pyramid(idx_list, pns)
        f_hat, inputs = None, []
        for k in range(len(pns) - 1):
            f_hat = self.add_scale(f_hat, idx_list[k], k, pns)
            inputs.append(self.next_input(f_hat, k, pns))
        if not inputs:
            return self.quantize.embedding.weight.new_zeros(idx_list[0].shape[0], 0, self.Cvae)
        return torch.cat(inputs, dim=1)

    # ---- training -------------------------------------------------------------------------
    def forward(self, img_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """(reconstruction (unclamped), vq loss, idx per scale, residual vectors per scale)."""
        f_st, vq_loss, idx_list, rests = self.quantize(self.img_to_f(img_B3HW))
        return self.decoder(self.post_quant_conv(f_st)), vq_loss, idx_list, rests

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        """As VAR: hit statistics recorded under another schedule are not an error; keep ours."""
        key = "quantize.ema_vocab_hit_SV"
        if key in state_dict and state_dict[key].shape != self.quantize.ema_vocab_hit_SV.shape:
            state_dict = dict(state_dict)
            state_dict[key] = self.quantize.ema_vocab_hit_SV.clone()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
