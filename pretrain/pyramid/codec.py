"""Pyramid codecs: image batch <-> per-scale targets, and the sampling state in between.

A codec is what the trainer and the sampler need from "the pyramid", whatever the cell:

    codes = codec.encode(img_B3HW)                       # targets per scale, coarse to fine
    x_BLCv = codec.pyramid_to_var_input(codes)           # teacher-forcing input of scales 1..K-1
    state = codec.add_scale(state, code_k, k)            # sampling: state after scale k
    x_BlC = codec.next_input(state, k)                   # input of scale k+1: state at its side
    img_B3HW = codec.fhat_to_img(state)
    codec.head                                           # loss / guidance / draw (heads.py)

The names match ``MultiScaleVQVAE``'s, so a VQ-VAE is itself the latent/discrete/residual
codec for the sampler. Every method takes an optional ``patch_nums`` (a sub-schedule).

Three levers (Hong & Belkadi, arXiv 2510.02826), docs/ablation.md:
- space: ``latent`` = the VQ-VAE's pre-quantisation latent f = quant_conv(encoder(img))
  (Cvae x h x h, h = patch_nums[-1]; one token per latent position); ``pixel`` = the image
  itself, one token per p x p patch (p = resolution / patch_nums[-1], 3 p^2 values), so every
  cell has the same L = sum(pn^2) tokens and the same transformer body.
- codes: ``discrete`` = latent: the VQ codebook (nearest code, lookup); pixel: a uniform
  quantiser per value (``UniformCodes``); ``continuous`` = the values themselves (Gaussian head).
- bands: ``residual`` = scale k codes the area-downsampled residual between the signal and the
  state so far (VAR's Alg. 1; the state accumulates upsampled contributions; the last scale is
  not resampled); ``absolute`` = scale k codes the whole signal area-downsampled to its side
  (a Gaussian pyramid) and the state is that scale's reconstruction upsampled, which the next
  scale is conditioned on.
Latent/discrete/residual is ``VarCodec``: the VQ-VAE's own methods (Phi included), bit-identical
to the tokenizer path. The generic codec applies no Phi (it refines quantised contributions of
the trained tokenizer; the other cells have none or another codebook use). Upsampling: bicubic
in latent space (VAR), bilinear in pixel space (a convex combination: no overshoot, so the
pixel quantiser's range holds).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from pretrain.config.fields import ConfigError
from pretrain.pyramid.heads import CategoricalHead, FactorisedHead, GaussianHead, Head

# ---- codes: values per token <-> targets -------------------------------------------------------


class ContinuousCodes:
    """The values themselves; regressed by a diagonal Gaussian head."""

    def head(self, values: int) -> Head:
        return GaussianHead(values)

    def encode(self, v_BlD: torch.Tensor, k: int) -> torch.Tensor:
        return v_BlD

    def decode(self, code: torch.Tensor, k: int) -> torch.Tensor:
        return code


class VQCodes:
    """The VQ-VAE's codebook: nearest code under L2 (VAR's rule), lookup (no Phi)."""

    def __init__(self, quantizer: Any):
        self.quantizer = quantizer

    def head(self, values: int) -> Head:
        return CategoricalHead(self.quantizer.vocab_size)

    def encode(self, v_BlC: torch.Tensor, k: int) -> torch.Tensor:
        B, l, C = v_BlC.shape
        return self.quantizer.nearest_code(v_BlC.reshape(B * l, C)).view(B, l)

    def decode(self, idx_Bl: torch.Tensor, k: int) -> torch.Tensor:
        return self.quantizer.embedding(idx_Bl)


class UniformCodes:
    """Each value rounded to one of ``levels`` evenly spaced levels on [-a_k, a_k].

    a_k = 1 for absolute bands and for the first scale (both code the image itself, in [-1, 1]);
    a_k = 2 for residual bands k > 0 (a residual of two [-1, 1] images). Values outside are
    clipped. Reconstruction error of a value in range <= step_k / 2, step_k = 2 a_k / (levels - 1);
    with residual bands only the last scale's error remains (it codes what the earlier scales,
    quantisation errors included, left)."""

    def __init__(self, levels: int, residual: bool):
        self.levels, self.residual = levels, residual

    def head(self, values: int) -> Head:
        return FactorisedHead(values, self.levels)

    def range(self, k: int) -> float:
        return 2.0 if self.residual and k > 0 else 1.0

    def step(self, k: int) -> float:
        return 2 * self.range(k) / (self.levels - 1)

    def encode(self, v_BlD: torch.Tensor, k: int) -> torch.Tensor:
        a = self.range(k)
        return torch.round((v_BlD.clamp(-a, a) + a) / self.step(k)).long()

    def decode(self, idx_BlD: torch.Tensor, k: int) -> torch.Tensor:
        return idx_BlD.float() * self.step(k) - self.range(k)


# ---- spaces: image <-> signal ------------------------------------------------------------------


class LatentSpace:
    """f = quant_conv(encoder(img)) of a frozen VQ-VAE; decoded by its decoder."""

    upsample = "bicubic"
    patch = 1

    def __init__(self, vae: Any):
        self.vae, self.channels = vae, vae.Cvae

    def to_signal(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        return self.vae.img_to_f(img_B3HW)

    def to_img(self, s_BChw: torch.Tensor) -> torch.Tensor:
        return self.vae.fhat_to_img(s_BChw)


class PixelSpace:
    """The image; a token is a p x p patch of the pyramid level of side p * pn."""

    upsample = "bilinear"
    channels = 3

    def __init__(self, patch: int):
        self.patch = patch

    def to_signal(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        return img_B3HW.float()

    def to_img(self, s_BChw: torch.Tensor) -> torch.Tensor:
        return s_BChw.clamp(-1, 1)


# ---- the codec ----------------------------------------------------------------------------------


class PyramidCodec:
    def __init__(self, space: Any, codes: Any, bands: str, patch_nums: Sequence[int]):
        self.space, self.codes, self.residual = space, codes, bands == "residual"
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.p = space.patch
        self.in_channels = space.channels * self.p ** 2  # values per token (word_embed's input)
        self.head = codes.head(self.in_channels)
        self.head_dim = self.head.out_dim

    def _pns(self, patch_nums: Optional[Sequence[int]]) -> tuple[int, ...]:
        return self.patch_nums if patch_nums is None else tuple(int(p) for p in patch_nums)

    def tokens(self, s_BChw: torch.Tensor) -> torch.Tensor:
        """Signal at side p*pn -> (B, pn^2, C p^2): one row per p x p patch."""
        return F.pixel_unshuffle(s_BChw, self.p).flatten(2).transpose(1, 2)

    def untokens(self, v_BlD: torch.Tensor, pn: int) -> torch.Tensor:
        return F.pixel_shuffle(v_BlD.transpose(1, 2).unflatten(2, (pn, pn)), self.p)

    def _resize(self, s_BChw: torch.Tensor, side: int) -> torch.Tensor:
        if s_BChw.shape[-1] == side:
            return s_BChw
        if s_BChw.shape[-1] > side:
            return F.interpolate(s_BChw, size=(side, side), mode="area")
        return F.interpolate(s_BChw, size=(side, side), mode=self.space.upsample)

    @torch.no_grad()
    def encode(self, img_B3HW: torch.Tensor, patch_nums: Optional[Sequence[int]] = None) -> list[torch.Tensor]:
        pns = self._pns(patch_nums)
        s_BChw = self.space.to_signal(img_B3HW)
        if s_BChw.shape[-1] != self.p * pns[-1]:
            raise ValueError(f"signal side {s_BChw.shape[-1]} != patch {self.p} x last scale {pns[-1]}")
        state, codes = None, []
        for k, pn in enumerate(pns):
            band = s_BChw - state if self.residual and state is not None else s_BChw
            codes.append(self.codes.encode(self.tokens(self._resize(band, self.p * pn)), k))
            if k < len(pns) - 1:
                state = self.add_scale(state, codes[-1], k, pns)
        return codes

    def add_scale(self, state: Optional[torch.Tensor], code: torch.Tensor, k: int,
                  patch_nums: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Residual: state + upsample(band k); absolute: upsample(reconstruction k)."""
        pns = self._pns(patch_nums)
        h = self._resize(self.untokens(self.codes.decode(code, k), pns[k]), self.p * pns[-1])
        return state + h if self.residual and state is not None else h

    def next_input(self, state: torch.Tensor, k: int, patch_nums: Optional[Sequence[int]] = None) -> torch.Tensor:
        pns = self._pns(patch_nums)
        return self.tokens(self._resize(state, self.p * pns[k + 1]))

    def fhat_to_img(self, state: torch.Tensor) -> torch.Tensor:
        return self.space.to_img(state)

    def pyramid_to_var_input(self, codes: Sequence[torch.Tensor], patch_nums: Optional[Sequence[int]] = None
                             ) -> torch.Tensor:
        pns = self._pns(patch_nums)
        state, inputs = None, []
        for k in range(len(pns) - 1):
            state = self.add_scale(state, codes[k], k, pns)
            inputs.append(self.next_input(state, k, pns))
        if not inputs:
            return codes[0].new_zeros(codes[0].shape[0], 0, self.in_channels, dtype=torch.float32)
        return torch.cat(inputs, dim=1)

    def decode(self, codes: Sequence[torch.Tensor], patch_nums: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Image from a whole pyramid (what sampling ends with)."""
        pns = self._pns(patch_nums)
        state = None
        for k in range(len(pns)):
            state = self.add_scale(state, codes[k], k, pns)
        return self.fhat_to_img(state)


class VarCodec:
    """Latent / discrete / residual: the VQ-VAE's own residual quantiser (VAR), unchanged."""

    def __init__(self, vae: Any):
        self.vae = vae
        self.patch_nums = tuple(vae.patch_nums)
        self.in_channels = vae.Cvae
        self.head = CategoricalHead(vae.vocab_size)
        self.head_dim = vae.vocab_size

    def encode(self, img_B3HW: torch.Tensor, patch_nums: Optional[Sequence[int]] = None) -> list[torch.Tensor]:
        return self.vae.encode_pyramid(img_B3HW, patch_nums)

    def pyramid_to_var_input(self, codes: Sequence[torch.Tensor], patch_nums: Optional[Sequence[int]] = None):
        return self.vae.pyramid_to_var_input(codes, patch_nums)

    def add_scale(self, state, code, k, patch_nums=None):
        return self.vae.add_scale(state, code, k, patch_nums)

    def next_input(self, state, k, patch_nums=None):
        return self.vae.next_input(state, k, patch_nums)

    def fhat_to_img(self, state):
        return self.vae.fhat_to_img(state)

    def decode(self, codes, patch_nums=None):
        return self.vae.decode_pyramid(codes, patch_nums)

    def draft_delta(self, idx_Bl, keep_Bl, k, patch_nums=None):
        return self.vae.draft_delta(idx_Bl, keep_Bl, k, patch_nums)


Codec = PyramidCodec | VarCodec


def pixel_patch(resolution: int, patch_nums: Sequence[int]) -> int:
    """Side p of a pixel-space token: the image side over the last scale's side."""
    if resolution % patch_nums[-1]:
        raise ConfigError(f"pyramid.space=pixel: data.resolution={resolution} is not a multiple of the last scale "
                          f"tokenizer.patch_nums[-1]={patch_nums[-1]} (a pixel token is a p x p patch, "
                          "p = resolution / patch_nums[-1])")
    return resolution // patch_nums[-1]


def check_sampling(cfg: Any) -> None:
    """Refuse sampler features a cell cannot serve: refinement re-enters the VQ-VAE's residual
    quantiser (restart) and re-predicts one categorical per token (self-correction, one-pass)."""
    p = cfg.pyramid
    if cfg.sample.refine != "none" and (p.space, p.codes, p.bands) != ("latent", "discrete", "residual"):
        why = ("continuous codes have no token distribution to re-draw from" if p.codes == "continuous" else
               "pixel-space discrete tokens are 3p^2 independent values, not one categorical" if p.space == "pixel" else
               "absolute bands have no residual forward process to re-enter")
        raise ConfigError(f"sample.refine={cfg.sample.refine} with pyramid.space={p.space} pyramid.codes={p.codes} "
                          f"pyramid.bands={p.bands}: {why}; use sample.refine=none")


def build_codec(cfg: Any, vae: Any = None) -> Codec:
    """The codec of ``cfg.pyramid`` (latent space needs the frozen VQ-VAE ``vae``)."""
    p, pns = cfg.pyramid, tuple(cfg.tokenizer.patch_nums)
    if p.space == "latent":
        if vae is None:
            raise ConfigError("pyramid.space=latent needs the tokenizer (tokenizer.ckpt)")
        if (p.codes, p.bands) == ("discrete", "residual"):
            return VarCodec(vae)
        codes = VQCodes(vae.quantize) if p.codes == "discrete" else ContinuousCodes()
        return PyramidCodec(LatentSpace(vae), codes, p.bands, pns)
    space = PixelSpace(pixel_patch(cfg.data.resolution, pns))
    codes = UniformCodes(p.pixel_levels, p.bands == "residual") if p.codes == "discrete" else ContinuousCodes()
    return PyramidCodec(space, codes, p.bands, pns)


def load_codec(run_cfg: Any) -> Codec:
    """The codec a trained run samples with: its config's cell, with its tokenizer file when latent
    (for `srdd sample` / `srdd eval` / `srdd ablate` on any cell)."""
    vae = None
    if run_cfg.pyramid.space == "latent":
        from pretrain.tokenizer import default_tokenizer_path, load_tokenizer

        vae = load_tokenizer(default_tokenizer_path(run_cfg))
    return build_codec(run_cfg, vae)
