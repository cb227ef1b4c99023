"""Zero-shot editing through the real KV-cached sampler: known tokens come back exactly."""
from __future__ import annotations

import math

import pytest
import torch

from pretrain.config import load_config
from pretrain.model import build_model
from pretrain.sampling.edit import box_mask, edit, mask_to_grid
from pretrain.sampling.batches import build_refiner
from pretrain.tokenizer import load_tokenizer


def test_mask_to_grid_keeps_only_cells_fully_inside():
    known = ~box_mask(32, (0.25, 0.25, 0.75, 0.75))           # inpaint: the centre 16x16 is unknown
    assert mask_to_grid(known, 4).view(4, 4).int().tolist() == [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]
    assert not mask_to_grid(known, 1).any() and not mask_to_grid(known, 2).any()


@pytest.mark.parametrize("task", ["inpaint", "outpaint", "superres"])
@pytest.mark.parametrize("mask", ["var", "srdd"])
def test_known_tokens_come_back_exactly(tiny_tokenizer_ckpt, task, mask):
    cfg = load_config(overrides=["model.size=d1", f"model.mask={mask}", "sample.refine=sr", "sample.refine_rounds=1"])
    vae = load_tokenizer(tiny_tokenizer_ckpt)
    torch.manual_seed(0)
    model = build_model(cfg.model, vae.vocab_size, vae.Cvae, vae.patch_nums).eval()
    img = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out, pyramid, known = edit(model, vae, img, torch.tensor([0, 1, 2]), task, cfg.sample,
                                   build_refiner(cfg.sample, model))
    assert out.shape == img.shape and sum(int(m.sum()) for m in known.mask) > 0
    for k, (idx, m, ref) in enumerate(zip(pyramid, known.mask, known.idx)):
        assert torch.equal(idx[m], ref[m]), f"scale {k}: a known token changed"


def make_model(tiny_tokenizer_ckpt, mask: str = "srdd"):
    cfg = load_config(overrides=["model.size=d1", f"model.mask={mask}"])
    vae = load_tokenizer(tiny_tokenizer_ckpt)
    torch.manual_seed(0)
    return cfg, vae, build_model(cfg.model, vae.vocab_size, vae.Cvae, vae.patch_nums).eval()


@pytest.mark.parametrize("task", ["inpaint", "outpaint", "superres"])
def test_edit_never_reads_the_hidden_pixels(tiny_tokenizer_ckpt, task):
    """Changing what the edit must not know (the box for inpaint, outside it for outpaint, detail
    below the low-res image for superres) leaves the output unchanged for a fixed seed, although the
    change is visible to the encoder: encoding the whole image (what the first version did for
    inpaint/outpaint) gives other codes at clamped positions."""
    from pretrain.sampling.edit import known_pixels, known_tokens

    cfg, vae, model = make_model(tiny_tokenizer_ckpt)
    torch.manual_seed(1)
    img = torch.rand(2, 3, 32, 32) - 0.5
    other = img.clone()
    if task == "superres":  # zero-mean detail inside every 2x2 block: the same 16x16 image
        detail = torch.rand(2, 3, 16, 16).repeat_interleave(2, -1).repeat_interleave(2, -2) * 0.4
        other = img + detail * torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(16, 16)
    else:
        hidden = ~known_pixels(task, 32, 2, cfg.sample.edit_box)
        other[hidden.expand_as(img)] = torch.rand(int(hidden.sum()) * 3) * 2 - 1
    with torch.no_grad():
        a, _, known = edit(model, vae, img, torch.tensor([0, 1]), task, cfg.sample)
        b, _, _ = edit(model, vae, other, torch.tensor([0, 1]), task, cfg.sample)
        leaky = [vae.encode_pyramid(x) for x in (img, other)]
    assert torch.equal(a, b)
    assert any(not torch.equal(p[m], q[m]) for p, q, m in zip(*leaky, known.mask)), "the test changes nothing the old procedure saw"
    if task != "superres":
        assert known_tokens(vae, img, task, vae.patch_nums, cfg.sample.edit_box).idx[-1].shape == (2, 64)


def test_known_region_psnr_of_a_perfect_round_trip_is_the_tokenizers_psnr(tiny_tokenizer_ckpt):
    """Every pixel known: the edit clamps every token, so its output is the tokenizer's round trip and
    the study's known-region PSNR is the tokenizer's own val PSNR on the same images."""
    from analysis.edit_study import psnr
    from pretrain.tokenizer.train import validate

    cfg, vae, model = make_model(tiny_tokenizer_ckpt)
    torch.manual_seed(2)
    img = torch.rand(4, 3, 32, 32) * 2 - 1
    everything = torch.ones(4, 1, 32, 32, dtype=torch.bool)
    with torch.no_grad():
        out, _, known = edit(model, vae, img, torch.arange(4), "inpaint", cfg.sample, known_B1HW=everything)
    assert all(bool(m.all()) for m in known.mask)
    tokenizer_psnr = validate(vae, [(img, torch.arange(4))], max_batches=1)["psnr"]
    assert psnr(out, img, everything) == pytest.approx(tokenizer_psnr, abs=1e-3)
    assert psnr(out, img) == pytest.approx(tokenizer_psnr, abs=1e-3)
    # a known region: the PSNR of the round trip there and nowhere else
    centre = box_mask(32, (0.25, 0.25, 0.75, 0.75), 4)
    mse = float((out - img).square()[centre.expand_as(img)].mean())
    assert psnr(out, img, centre) == pytest.approx(10 * math.log10(4 / mse), rel=1e-6)


def test_random_boxes_are_seeded_and_inside_the_image():
    from analysis.edit_study import random_boxes

    a, b = random_boxes(8, 32, seed=3), random_boxes(8, 32, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, random_boxes(8, 32, seed=4))
    sides = a.flatten(1).sum(1).float().sqrt()
    assert bool(((sides >= 0.3 * 32 - 1) & (sides <= 0.6 * 32 + 1)).all())
