"""The learned resampling policy: its targets, its file format, and that - trained on held-out
pyramids of real digits - it picks tokens whose re-draw helps more than a random pick does.

Pyramids: the data area's ``pyramid_shards`` (real MNIST digits, tiny tokenizer). The transformer
is a d1 briefly trained in-test on the train split, so that its uncertainty carries signal (a
random-init model is uniform: nothing to select); the policy sees only the val split."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_pipeline.pyramid_shards.loader import PyramidLoader
from pretrain.config import load_config
from pretrain.config.fields import ConfigError
from pretrain.model import build_model
from pretrain.policy import (FEATURES, ResamplePolicy, load_policy, redraw_gain, run_policy_study, save_policy,
                             uncertainty_features)
from pretrain.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def trained(tiny_tokenizer_ckpt, pyramid_shards):
    """(d1 model trained 30 steps of 16 on the train pyramids, tokenizer, 6 val batches of 8)."""
    cfg = load_config(overrides=["model.size=d1", "model.mask=srdd", f"data.pyramids_dir={pyramid_shards}"])
    vae = load_tokenizer(tiny_tokenizer_ckpt)
    torch.manual_seed(0)
    model = build_model(cfg.model, vae.vocab_size, vae.Cvae, vae.patch_nums).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for label_B, idx_list in itertools.islice(PyramidLoader(cfg, split="train", batch_size=16, seed=0), 30):
        with torch.no_grad():
            x_BLCv = vae.pyramid_to_var_input(idx_list)
        loss = F.cross_entropy(model(label_B, x_BLCv).flatten(0, 1), torch.cat(idx_list, 1).flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    heldout = list(itertools.islice(PyramidLoader(cfg, split="val", batch_size=8, infinite=False), 6))
    return model.eval(), vae, heldout


def test_redraw_gain_is_the_expected_change_in_correctness():
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.5, 0.5, 0.0]]])
    drawn, truth = torch.tensor([[0, 1, 1]]), torch.tensor([[0, 0, 1]])
    # right token kept with prob 0.7 -> 0.7 - 1; wrong token fixed with prob 0.7; 0.5 - 1
    assert torch.allclose(redraw_gain(probs, drawn, truth), torch.tensor([[-0.3, 0.7, -0.5]]))
    mc = torch.multinomial(probs[0, 1], 100_000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert abs(float((mc == 0).float().mean()) - 0.7) < 0.01  # a re-draw of the wrong token 1 is right 70% of the time


def test_uncertainty_features_match_their_definitions():
    probs = torch.tensor([[[0.5, 0.3, 0.2, 0.0]]])
    f = uncertainty_features(probs, torch.tensor([[2]]), k=1, K=3)[0, 0]
    entropy = -(0.5 * np.log(0.5) + 0.3 * np.log(0.3) + 0.2 * np.log(0.2)) / np.log(4)
    assert f.tolist() == pytest.approx([entropy, 0.5, 0.2, 0.2, 0.5], abs=1e-6)
    assert len(FEATURES) == f.numel()


def test_policy_file_round_trips_and_bad_files_are_rejected(tmp_path):
    torch.manual_seed(0)
    policy = ResamplePolicy(hidden=8)
    path = save_policy(policy, tmp_path / "policy.pt", {"note": "test"})
    x = torch.rand(5, len(FEATURES))
    assert torch.equal(load_policy(path)(x), policy(x).detach())
    torch.save({"format": "something-else"}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="sample.policy_ckpt"):
        load_policy(tmp_path / "bad.pt")


def test_policy_beats_random_selection_on_held_out_targets(trained, tmp_path):
    model, vae, heldout = trained
    cfg = load_config(overrides=["sample.refine=mr", "sample.refine_rounds=1", "train.wandb=disabled"])
    policy, report = run_policy_study(model, vae, heldout, cfg.sample, steps=100, out=tmp_path / "policy", train=cfg.train)
    sel = report["selection"]
    assert report["train_tokens"] == 4 * 8 * 130 and report["val_tokens"] == 2 * 8 * 130
    assert sel["policy_gain"] > sel["random_gain"] + 0.03, sel  # ~2 standard errors of 208 random picks
    assert sel["oracle_gain"] >= sel["policy_gain"]
    assert report["val_mse"] < report["val_mse_zero"]  # better than predicting "no gain" everywhere
    rows = {r["variant"].split("(")[0]: r for r in report["comparison"]}
    assert rows["none"]["extra_passes"] == 0 and rows["none"]["redrawn_frac"] == 0
    assert rows["policy"]["extra_passes"] > 0 and rows["mr"]["extra_passes"] > 0
    assert all(0.0 <= r["token_acc"] <= 1.0 and r["tokens"] == report["val_tokens"] for r in rows.values())
    assert rows["policy"]["token_acc"] > rows["none"]["token_acc"]  # its re-draws move tokens to the truth
