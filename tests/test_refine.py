"""Refinement hooks on real teacher-forced scale steps of a tiny transformer (the sampler core's
ScaleStep is stood in by policy.TeacherForcedStep, whose ``forward`` returns the same-state logits)."""
from __future__ import annotations

import copy

import pytest
import torch

from pretrain.config import load_config
from pretrain.policy import TeacherForcedStep
from pretrain.model.flops import scale_flops
from pretrain.sampling.batches import build_refiner
from pretrain.sampling.refine import RefineCost, compose


@pytest.fixture(scope="module")
def steps(tiny_srdd_model):
    """(model, [TeacherForcedStep per scale]) for 4 random images, conditional logits, plain softmax draws."""
    cfg, vae, model = tiny_srdd_model()
    pyr = vae.encode_pyramid(torch.rand(4, 3, 32, 32) * 2 - 1)
    label = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        logits = model(label, vae.pyramid_to_var_input(pyr))
    g = torch.Generator().manual_seed(0)
    probs = lambda lg: lg.softmax(-1)  # noqa: E731
    draw = lambda lg: torch.multinomial(probs(lg).flatten(0, 1), 1, generator=g).view(lg.shape[:2])  # noqa: E731
    out = []
    for k, (b, e) in enumerate(model.begin_ends):
        lg = logits[:, b:e]
        out.append(TeacherForcedStep(k, model.patch_nums[k], model.patch_nums, label, lg, draw(lg), 4, probs, draw))
    return model, out


def refiner(model, *overrides):
    cost = RefineCost()
    return build_refiner(load_config(overrides=list(overrides)).sample, model, cost), cost


def test_mr_with_p_resample_zero_changes_nothing_and_costs_nothing(steps):
    model, ss = steps
    hook, cost = refiner(model, "sample.refine=mr", "sample.p_resample=0", "sample.refine_rounds=3")
    for s in ss:
        assert torch.equal(hook(s), s.idx_Bl)
    assert cost.passes == cost.flops == cost.redrawn_tokens == 0


def test_sr_cost_counts_every_pass_and_its_flops(steps):
    model, ss = steps
    hook, cost = refiner(model, "sample.refine=sr", "sample.refine_rounds=2", "sample.refine_scales=[2,4]")
    changed = [not torch.equal(hook(s), s.idx_Bl) for s in ss]
    assert changed[:2] == [False, False] and changed[5] is False  # outside the scale range: untouched
    assert cost.passes == 6 and cost.passes_per_scale == {2: 2, 3: 2, 4: 2}
    pns = model.patch_nums
    assert cost.rows == 2 * 4 * sum(p * p for p in pns[2:5])
    assert cost.redrawn_tokens == 2 * 4 * sum(p * p for p in pns[2:5])
    # independent FLOP count: 2 N_nonembed per token + attention over the own scale only (window 0)
    n = model.num_non_embedding_params()
    expect = sum(2 * 4 * p * p * (2 * n + 4 * model.depth * model.C * p * p) for p in pns[2:5])
    assert cost.flops == expect == sum(scale_flops(model, k, pns, 4) * 2 for k in (2, 3, 4))


def test_mr_redraws_only_low_probability_tokens(steps):
    model, ss = steps
    hook, cost = refiner(model, "sample.refine=mr", "sample.p_resample=0.01", "sample.refine_rounds=1")
    s = ss[5]
    low = s.probs(s.logits_BlV).gather(-1, s.idx_Bl[..., None])[..., 0] < 0.01
    new = hook(s)
    assert torch.equal(new[~low], s.idx_Bl[~low])
    assert cost.redrawn_tokens == int(low.sum()) and cost.passes == int(bool(low.any()))


def test_compose_applies_hooks_in_order(steps):
    _, ss = steps
    s = copy.copy(ss[3])  # compose sets step.idx_Bl as it goes
    zero = lambda step: torch.zeros_like(step.idx_Bl)  # noqa: E731
    plus1 = lambda step: step.idx_Bl + 1  # noqa: E731
    assert torch.equal(compose(None, zero, plus1)(s), torch.ones_like(s.idx_Bl))
    assert compose(None, None) is None
