"""Zero-shot editing through the real KV-cached sampler: known tokens come back exactly."""
from __future__ import annotations

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
