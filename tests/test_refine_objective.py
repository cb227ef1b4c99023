"""``train.refine_objective=remask`` (pretrain/train/refine_objective.py) through the real `srdd train`:
the self-correction inputs are trained, checked independently of the training loss; old-format
runs (no draft inputs) keep loading; the objective's FLOPs are counted."""
from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F

from data_pipeline.pyramid_shards.loader import PyramidLoader
from pretrain.config import load_config
from pretrain.model import build_model
from pretrain.model.flops import train_flops_per_sample
from pretrain.outputs import read_jsonl
from pretrain.tokenizer import load_tokenizer
from pretrain.train.export import load_model
from pretrain.train.refine_objective import corrupt_drafts
from tests.plugins.training_runs import run_srdd, train_overrides

STEPS = 30


def masked_draft_ce(model, vae, batches) -> float:
    """Mean CE of the draft stream at the removed tokens of drafts with half of every scale removed
    (true tokens kept, a fixed generator): the self-correction task, scored apart from training."""
    g = torch.Generator().manual_seed(123)
    total = n = 0.0
    with torch.no_grad():
        for label_B, idx_list in batches:
            x_BLCv = vae.pyramid_to_var_input(idx_list)
            masked = [torch.rand(t.shape, generator=g) < 0.5 for t in idx_list]
            delta = torch.cat([vae.draft_delta(t, ~m, k) for k, (t, m) in enumerate(zip(idx_list, masked))], dim=1)
            masked_BL = torch.cat(masked, dim=1)
            _, draft = model(label_B, x_BLCv, draft=(delta, masked_BL))
            ce = F.cross_entropy(draft.flatten(0, 1), torch.cat(idx_list, 1).flatten(), reduction="none")
            total += float(ce[masked_BL.flatten()].sum())
            n += int(masked_BL.sum())
    return total / n


def test_corrupt_drafts_removes_a_fraction_per_scale_and_replaces_only_kept_tokens():
    torch.manual_seed(0)
    target = torch.randint(0, 50, (400, 20))
    model_draw = torch.randint(50, 100, (400, 20))  # disjoint codes: every replacement is visible
    bounds = [(0, 4), (4, 20)]
    draft, masked = corrupt_drafts(target, bounds, 0.25, model_draw)
    replaced = draft != target
    assert not (replaced & masked).any()  # a removed token is not also replaced
    assert 0.4 < masked.float().mean() < 0.6  # U(0, 1) fraction per sample and scale: mean 1/2
    kept = ~masked
    assert abs(float(replaced[kept].float().mean()) - 0.25) < 0.02
    same_ratio = masked[:, :4].float().mean(1) - masked[:, 4:].float().mean(1)
    assert same_ratio.abs().mean() > 0.1  # the fraction is drawn per scale, not per sample
    assert torch.equal(corrupt_drafts(target, bounds, 0.0, None)[0], target)


@pytest.mark.slow
def test_remask_training_lowers_the_draft_loss_and_old_runs_still_load(tmp_path, pyramid_shards, tiny_tokenizer_ckpt):
    home = tmp_path / "home"
    run_srdd(home, "train", [*train_overrides(pyramid_shards, tiny_tokenizer_ckpt), "model.mask=srdd",
                             "train.refine_objective=remask", f"train.max_steps={STEPS}", "train.batch_size=16",
                             "train.val_every=0", "train.log_every=10", "run_name=remask"])
    model, cfg, _ = load_model(home / "remask" / "model.pt")
    assert model.refine_inputs and cfg.train.refine_objective == "remask"
    vae = load_tokenizer(tiny_tokenizer_ckpt)
    torch.manual_seed(cfg.seed)  # the run's initial weights: the same seed, the same build
    init = build_model(cfg.model, vae.vocab_size, vae.Cvae, vae.patch_nums, refine_inputs=True).eval()
    val_cfg = load_config(overrides=[f"data.pyramids_dir={pyramid_shards}"])
    heldout = list(itertools.islice(PyramidLoader(val_cfg, split="val", batch_size=16, infinite=False), 3))
    before, after = masked_draft_ce(init, vae, heldout), masked_draft_ce(model, vae, heldout)
    assert after < before - 0.2, (before, after)

    train = [r for r in read_jsonl(home / "remask" / "metrics.jsonl") if r["kind"] == "train"]
    assert all(0 < r["refine_loss"] < 10 and len(r["refine_loss_per_scale"]) == 6 for r in train)
    final = json.loads((home / "remask" / "final.json").read_text())
    factor = 2 + 1 / 3  # draft stream forward + backward, plus the replacement tokens' no-grad forward
    assert final["flops"] == STEPS * 16 * round(factor * train_flops_per_sample(model))

    # a run saved before the objective existed (no draft inputs, no config key) loads as it always did
    blob = torch.load(home / "remask" / "model.pt", weights_only=True)
    blob["state_dict"] = {k: v for k, v in blob["state_dict"].items() if not k.startswith("draft_")}
    del blob["config"]["train"]["refine_objective"], blob["config"]["train"]["refine_replace"]
    torch.save(blob, tmp_path / "old.pt")
    old, old_cfg, _ = load_model(tmp_path / "old.pt")
    assert not old.refine_inputs and old_cfg.train.refine_objective == "off"
    assert not any(k.startswith("draft_") for k in old.state_dict())
