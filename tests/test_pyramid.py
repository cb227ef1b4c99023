"""Pyramid codecs (pretrain/pyramid): each lever changes what it claims, the default cell is VAR's
path bit for bit, every cell's head gives finite losses and samples, bad combinations are refused."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pretrain.config import load_config
from pretrain.config.fields import ConfigError
from pretrain.pyramid.codec import UniformCodes, VarCodec, build_codec, check_sampling
from pretrain.pyramid.heads import FactorisedHead, GaussianHead

CELLS = ["-".join(c) for c in itertools.product(("latent", "pixel"), ("discrete", "continuous"), ("residual", "absolute"))]


def cell_config(cell: str, *extra: str):
    space, codes, bands = cell.split("-")
    return load_config(overrides=[f"pyramid.space={space}", f"pyramid.codes={codes}", f"pyramid.bands={bands}", *extra])


@pytest.fixture(scope="module")
def vae(tiny_tokenizer_ckpt):
    from pretrain.tokenizer import load_tokenizer

    return load_tokenizer(tiny_tokenizer_ckpt).requires_grad_(False)


@pytest.fixture(scope="module")
def digits(mnist_shards):
    """16 real MNIST digits (32 px, [-1, 1]) and their labels."""
    from data_pipeline.image_shards.loader import image_loader

    cfg = load_config(overrides=[f"data.shards_dir={mnist_shards}"])
    return next(image_loader(cfg, "val", batch_size=16, infinite=False))


def patches(img_BCHW: torch.Tensor, side: int, p: int) -> torch.Tensor:
    """Independent re-statement of a pixel token: area-resize to ``side``, cut p x p patches, each
    flattened channel-major (c, i, j) -> (B, (side/p)^2, C p^2)."""
    x = F.interpolate(img_BCHW, size=(side, side), mode="area") if img_BCHW.shape[-1] != side else img_BCHW
    B, C, n = x.shape[0], x.shape[1], side // p
    return x.reshape(B, C, n, p, n, p).permute(0, 2, 4, 1, 3, 5).reshape(B, n * n, C * p * p)


# ---- space: pixel pyramids ---------------------------------------------------------------------
def test_pixel_continuous_residual_reconstructs_exactly(digits):
    img, _ = digits
    codec = build_codec(cell_config("pixel-continuous-residual"))
    codes = codec.encode(img)
    assert [c.shape for c in codes] == [(16, pn * pn, 48) for pn in codec.patch_nums]
    assert torch.allclose(codec.decode(codes), img, atol=1e-5)
    assert codes[-1].abs().max() > 0.1  # the finest band carries detail the coarser ones lack


@pytest.mark.parametrize("bands", ["residual", "absolute"])
def test_pixel_discrete_reconstructs_within_quantiser_error(digits, bands):
    img, _ = digits
    cfg = cell_config(f"pixel-discrete-{bands}", "pyramid.pixel_levels=16")
    codec = build_codec(cfg)
    codes = codec.encode(img)
    assert all(c.dtype == torch.long and 0 <= int(c.min()) and int(c.max()) < 16 for c in codes)
    K = len(codec.patch_nums)
    half_step = codec.codes.step(K - 1) / 2  # residual: 2*2/15/2; absolute: 2*1/15/2
    assert half_step == pytest.approx((2.0 if bands == "residual" else 1.0) / 15)
    err = (codec.decode(codes) - img).abs().max().item()
    assert err <= half_step + 1e-5
    assert err > 0.2 * half_step  # it is a quantiser, not the identity
    finer = build_codec(cell_config(f"pixel-discrete-{bands}", "pyramid.pixel_levels=64"))
    assert (finer.decode(finer.encode(img)) - img).abs().max().item() <= (2.0 if bands == "residual" else 1.0) / 63 + 1e-5


def test_uniform_quantiser_levels_and_clipping():
    q = UniformCodes(levels=5, residual=True)
    assert q.range(0) == 1.0 and q.range(3) == 2.0
    grid = torch.tensor([[[-2.0, -1.0, 0.0, 1.0, 2.0]]])
    assert torch.equal(q.encode(grid, 1), torch.tensor([[[0, 1, 2, 3, 4]]]))
    assert torch.equal(q.decode(q.encode(grid, 1), 1), grid)
    assert torch.equal(q.encode(torch.tensor([[[9.0, -9.0]]]), 1), torch.tensor([[[4, 0]]]))  # clipped


# ---- bands: absolute = Gaussian pyramid --------------------------------------------------------
def test_absolute_band_targets_are_the_downsampled_signal(digits, vae):
    img, _ = digits
    pix = build_codec(cell_config("pixel-continuous-absolute"))
    for k, (code, pn) in enumerate(zip(pix.encode(img), pix.patch_nums)):
        assert torch.allclose(code, patches(img, 4 * pn, 4), atol=1e-6), k

    f = vae.img_to_f(img)
    lat = build_codec(cell_config("latent-continuous-absolute"), vae)
    lat_d = build_codec(cell_config("latent-discrete-absolute"), vae)
    for k, (code, idx, pn) in enumerate(zip(lat.encode(img), lat_d.encode(img), lat.patch_nums)):
        want = patches(f, pn, 1)
        assert torch.allclose(code, want, atol=1e-5), k
        assert torch.equal(idx, vae.quantize.nearest_code(want.reshape(-1, vae.Cvae)).view(16, -1)), k


def test_residual_bands_are_what_earlier_scales_lack(digits, vae):
    img, _ = digits
    absolute = build_codec(cell_config("pixel-continuous-absolute")).encode(img)
    residual = build_codec(cell_config("pixel-continuous-residual")).encode(img)
    assert torch.allclose(absolute[0], residual[0])  # nothing before the first scale
    assert residual[-1].abs().mean() < 0.5 * absolute[-1].abs().mean()
    # latent continuous residual: the bands sum (upsampled) to the encoder's latent f exactly
    lat = build_codec(cell_config("latent-continuous-residual"), vae)
    state = None
    for k, code in enumerate(lat.encode(img)):
        state = lat.add_scale(state, code, k)
    assert torch.allclose(state, vae.img_to_f(img), atol=1e-5)


def test_absolute_next_input_is_the_previous_scale_upsampled(digits):
    img, _ = digits
    codec = build_codec(cell_config("pixel-continuous-absolute"))
    codes = codec.encode(img)
    x = codec.pyramid_to_var_input(codes)
    pns = codec.patch_nums
    start = 0
    for k in range(len(pns) - 1):
        prev_map = patches(img, 4 * pns[k], 4).transpose(1, 2).reshape(16, 48, pns[k], pns[k])  # scale k's level
        up = F.interpolate(F.pixel_shuffle(prev_map, 4), size=(32, 32), mode="bilinear")
        n = pns[k + 1] ** 2
        assert torch.allclose(x[:, start:start + n], patches(up, 4 * pns[k + 1], 4), atol=1e-5), k
        start += n


# ---- the default cell is VAR's path ------------------------------------------------------------
def test_latent_discrete_residual_is_the_vqvae_path(digits, vae):
    img, _ = digits
    codec = build_codec(load_config(), vae)
    assert isinstance(codec, VarCodec) and codec.head_dim == vae.vocab_size and codec.in_channels == vae.Cvae
    idx = vae.encode_pyramid(img)
    assert all(torch.equal(a, b) for a, b in zip(codec.encode(img), idx))
    assert torch.equal(codec.pyramid_to_var_input(idx), vae.pyramid_to_var_input(idx))


def tiny_model(codec, cfg):
    from pretrain.model import build_model

    torch.manual_seed(0)
    return build_model(cfg.model, codec.head_dim, codec.in_channels, codec.patch_nums, size="d1")


def test_sampling_through_the_var_codec_is_bit_identical(vae):
    from pretrain.sampling import sample

    cfg = load_config()
    model = tiny_model(VarCodec(vae), cfg).eval()
    label_B = torch.tensor([0, 3, 7])
    a, pa = sample(model, vae, label_B, cfg=2.0, top_k=50, top_p=0.9, seed=5, return_pyramid=True)
    b, pb = sample(model, build_codec(cfg, vae), label_B, cfg=2.0, top_k=50, top_p=0.9, seed=5, return_pyramid=True)
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(pa, pb))


# ---- heads: loss equations, guidance, draws -----------------------------------------------------
def test_gaussian_head_nll_guide_and_draw():
    torch.manual_seed(0)
    head = GaussianHead(3)
    out = torch.randn(2, 5, 6)
    target = torch.randn(2, 5, 3)
    objective, nll_BL, correct = head.loss(out, target, 0.1)
    mu, logvar = out.chunk(2, -1)
    ref = -torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(target).mean(-1)
    assert torch.allclose(nll_BL, ref, atol=1e-5) and objective.item() == pytest.approx(ref.mean().item(), abs=1e-5)
    assert torch.isnan(correct).all()
    cond, uncond = torch.randn(1, 2, 6), torch.randn(1, 2, 6)
    g = head.guide(cond, uncond, 1.5)
    assert torch.allclose(g[..., :3], 2.5 * cond[..., :3] - 1.5 * uncond[..., :3]) and torch.equal(g[..., 3:], cond[..., 3:])
    assert torch.equal(head.draw(cond, None, 0, 0.0, 0.0), cond[..., :3])  # temperature 0: the mean
    many = head.draw(torch.tensor([[[0.5, math.log(0.25)]]]).expand(1, 20000, 2), torch.Generator().manual_seed(0), 0, 0.0, 2.0)
    assert many.mean().item() == pytest.approx(0.5, abs=0.02) and many.std().item() == pytest.approx(2 * 0.5, abs=0.02)


def test_factorised_head_is_cross_entropy_per_value():
    torch.manual_seed(0)
    head = FactorisedHead(4, 7)
    out = torch.randn(2, 5, 28)
    target = torch.randint(0, 7, (2, 5, 4))
    objective, nll_BL, correct_BL = head.loss(out, target, 0.1)
    logits = out.view(2, 5, 4, 7)
    ce = F.cross_entropy(logits.reshape(-1, 7), target.reshape(-1), reduction="none").view(2, 5, 4)
    assert torch.allclose(nll_BL, ce.mean(-1), atol=1e-6)
    assert objective.item() == pytest.approx(F.cross_entropy(logits.reshape(-1, 7), target.reshape(-1), label_smoothing=0.1).item(), abs=1e-6)
    assert torch.allclose(correct_BL, (logits.argmax(-1) == target).float().mean(-1))
    drawn = head.draw(out, torch.Generator().manual_seed(0), 1, 0.0, 1.0)  # top-1: the argmax of each value
    assert torch.equal(drawn, logits.argmax(-1))


# ---- every cell: finite teacher-forced loss (with gradients) and finite samples -----------------
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_has_finite_loss_and_samples(cell, digits, vae):
    from pretrain.sampling import sample

    img, label = digits
    cfg = cell_config(cell)
    codec = build_codec(cfg, vae)
    model = tiny_model(codec, cfg)
    assert model.head.out_features == codec.head_dim and model.word_embed.in_features == codec.in_channels
    codes = codec.encode(img[:4])
    out = model(label[:4], codec.pyramid_to_var_input(codes))
    objective, nll_BL, _ = codec.head.loss(out, torch.cat(codes, dim=1), 0.1)
    objective.backward()
    assert torch.isfinite(objective) and torch.isfinite(nll_BL).all() and nll_BL.shape == (4, model.L)
    assert torch.isfinite(model.head.weight.grad).all()
    imgs, pyramid = sample(model.eval(), codec, torch.tensor([1, 2]), cfg=1.5, seed=0, return_pyramid=True)
    assert imgs.shape == (2, 3, 32, 32) and torch.isfinite(imgs).all() and imgs.abs().max() <= 1
    assert [p.shape[:2] for p in pyramid] == [(2, pn * pn) for pn in codec.patch_nums]


# ---- refusals ------------------------------------------------------------------------------------
def test_unsupported_combinations_are_refused_by_name(vae):
    with pytest.raises(ConfigError, match=r"pyramid\.data=pyramids.*pyramid\.space=pixel"):
        load_config(overrides=["pyramid.data=pyramids", "pyramid.space=pixel"])
    with pytest.raises(ConfigError, match=r"pyramid\.space=pixel.*data\.resolution=36"):
        build_codec(cell_config("pixel-discrete-residual", "data.resolution=36"))
    with pytest.raises(ConfigError, match=r"sample\.refine=mr.*pyramid\.codes=continuous.*no token distribution"):
        check_sampling(cell_config("latent-continuous-residual", "sample.refine=mr"))
    with pytest.raises(ConfigError, match=r"pyramid\.space=pixel.*pyramid\.codes=discrete"):
        check_sampling(cell_config("pixel-discrete-absolute", "sample.refine=sr"))
    with pytest.raises(ConfigError, match=r"pyramid\.bands=absolute: absolute bands have no residual forward process"):
        check_sampling(cell_config("latent-discrete-absolute", "sample.refine=sr"))  # restart re-quantises residuals
    check_sampling(load_config(overrides=["sample.refine=mr"]))  # the VAR cell refines
    with pytest.raises(ConfigError, match=r"pyramid\.space=latent needs the tokenizer"):
        build_codec(cell_config("latent-continuous-absolute"))


def test_sampler_refuses_refinement_on_a_continuous_head(vae):
    from pretrain.sampling import sample

    cfg = cell_config("pixel-continuous-residual")
    codec = build_codec(cfg)
    with pytest.raises(ValueError, match="GaussianHead"):
        sample(tiny_model(codec, cfg).eval(), codec, torch.tensor([0]), refine=lambda step: step.idx_Bl)
