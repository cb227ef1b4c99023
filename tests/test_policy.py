"""The learned restart policy (pretrain/policy.py) at sampling time, and its measured targets
(analysis/policy_train.py): features by their definitions, determinism given a seed, the
always-refine policy is R = 1 restart on every scale, and the gains are what re-sampling measures."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.metrics.cnn import ClassifierCNN
from analysis.metrics.networks import FeatureNet
from analysis.policy_train import BranchAt, class_log_likelihood, evaluate_policy, measure_gains
from pretrain.config import load_config
from pretrain.config.fields import ConfigError
from pretrain.model.flops import scale_flops
from pretrain.policy import FEATURES, PolicyRestart, RefinePolicy, load_policy, save_policy, scale_features
from pretrain.sampling.refine import RestartSchedule
from pretrain.sampling.sampler import sample


class Spy(PolicyRestart):
    """The policy's restart, keeping the features it read and what it decided."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def select(self, step):
        chosen = super().select(step)
        self.seen.append((step.k, scale_features(step.probs(step.logits_BlV), step.idx_Bl, step.k,
                                                 len(step.patch_nums), step.t), chosen))
        return chosen


def policy(seed: int = 0, always: bool = False) -> RefinePolicy:
    torch.manual_seed(seed)
    p = RefinePolicy(hidden=8).eval()
    if always:  # a constant positive prediction: every (sample, scale) gets its round
        with torch.no_grad():
            for param in p.parameters():
                param.zero_()
            p.net[-1].bias.fill_(1.0)
    return p


def test_scale_features_match_their_definitions():
    probs = torch.tensor([[[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25]]])
    f = scale_features(probs, torch.tensor([[2, 0]]), k=1, K=3, t=0.75)[0]
    h0 = -(0.5 * np.log(0.5) + 0.3 * np.log(0.3) + 0.2 * np.log(0.2)) / np.log(4)
    expect = [(h0 + 1) / 2, 1.0, (0.2 + 0.0) / 2, 0.0, (0.2 + 0.25) / 2, 0.2, 0.5, 0.75]
    assert f.tolist() == pytest.approx(expect, abs=1e-6) and len(FEATURES) == f.numel()


def test_policy_features_and_decisions_are_deterministic_given_a_seed(tiny_srdd_model):
    _, vae, model = tiny_srdd_model()
    labels = torch.tensor([0, 1, 2, 3])
    runs = []
    for _ in range(2):
        spy = Spy(policy(seed=3), rounds=1, depth=1)
        _, pyr = sample(model, vae, labels, seed=5, restart=spy, return_pyramid=True)
        runs.append((spy.seen, pyr))
    (seen_a, pyr_a), (seen_b, pyr_b) = runs
    assert len(seen_a) == len(model.patch_nums)
    for (k, fa, ca), (k2, fb, cb) in zip(seen_a, seen_b, strict=True):
        assert k == k2 and torch.equal(fa, fb) and torch.equal(ca, cb)
    assert all(torch.equal(a, b) for a, b in zip(pyr_a, pyr_b))
    chosen = torch.stack([c for _, _, c in seen_a])
    assert 0 < int(chosen.sum()) < chosen.numel()  # a real mix of decisions, not a constant
    spy_c = Spy(policy(seed=3), rounds=1, depth=1)
    sample(model, vae, labels, seed=6, restart=spy_c)
    assert not all(torch.equal(fa, fc) for (_, fa, _), (_, fc, _) in zip(seen_a, spy_c.seen))  # the seed matters


def test_a_policy_that_always_refines_is_one_restart_round_on_every_scale(tiny_srdd_model):
    _, vae, model = tiny_srdd_model()
    labels = torch.tensor([4, 5, 6])
    out = {}
    for name, restart in (("policy", PolicyRestart(policy(always=True), rounds=1, depth=1)),
                          ("restart", RestartSchedule(rounds=1, depth=1))):
        stats = {}
        img, pyr = sample(model, vae, labels, seed=2, restart=restart, return_pyramid=True, stats=stats)
        out[name] = (img, pyr, stats)
    (img_p, pyr_p, st_p), (img_r, pyr_r, st_r) = out["policy"], out["restart"]
    assert all(torch.equal(a, b) for a, b in zip(pyr_p, pyr_r)) and torch.equal(img_p, img_r)
    assert st_p["restart_rows"] == st_r["restart_rows"] == len(labels) * len(model.patch_nums)
    assert st_p["flops"] == st_r["flops"]


def test_policy_file_round_trips_and_bad_files_are_rejected(tmp_path):
    p = policy(seed=1)
    path = save_policy(p, tmp_path / "policy.pt", {"depth": 2})
    loaded, meta = load_policy(path)
    x = torch.rand(5, len(FEATURES))
    assert torch.equal(loaded(x), p(x).detach()) and meta == {"depth": 2}
    torch.save({"format": "srdd-policy-v1"}, tmp_path / "old.pt")
    with pytest.raises(ConfigError, match="sample.policy_ckpt"):
        load_policy(tmp_path / "old.pt")


def test_build_refiner_refuses_a_policy_trained_for_another_depth(tmp_path, tiny_srdd_model):
    from pretrain.sampling.batches import build_refiner

    _, _, model = tiny_srdd_model()
    path = save_policy(policy(), tmp_path / "policy.pt", {"depth": 2})
    cfg = load_config(overrides=["sample.refine=policy", f"sample.policy_ckpt={path}"])
    with pytest.raises(ConfigError, match="refine_depth=2"):
        build_refiner(cfg.sample, model)
    cfg = load_config(overrides=["sample.refine=policy", f"sample.policy_ckpt={path}", "sample.refine_depth=2"])
    assert isinstance(build_refiner(cfg.sample, model).restart, PolicyRestart)


def test_measured_gains_are_the_score_change_of_one_restart_minus_its_flops(tiny_srdd_model):
    """Independent check of one target: re-run the base and the scale-k branch by hand."""
    _, vae, model = tiny_srdd_model()
    torch.manual_seed(0)
    net = FeatureNet("mnist-cnn", "0" * 64, ClassifierCNN(10, width=4, feat_dim=8).eval())
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    s = load_config(overrides=["sample.batch_size=3", "sample.seed=4"]).sample
    data = measure_gains(model, vae, net, labels, s, flops_penalty=0.5)
    K = len(model.patch_nums)
    assert data["features"].shape == (2 * K * 3, len(FEATURES)) and len(data["target"]) == 2 * K * 3
    # second batch (labels 3..5, seed 4 + 3), scale 2
    label_B, k = labels[3:], 2
    base_stats, branch_stats = {}, {}
    base = sample(model, vae, label_B, seed=7, restart=BranchAt(1, None), stats=base_stats)
    branch = sample(model, vae, label_B, seed=7, restart=BranchAt(1, k), stats=branch_stats)
    gain = (class_log_likelihood(net, branch, label_B) - class_log_likelihood(net, base, label_B)).numpy()
    relcost = (branch_stats["flops"] - base_stats["flops"]) / base_stats["flops"]
    rows = (data["trajectory"] >= 3) & (data["scale"] == k)
    np.testing.assert_allclose(data["gain"][rows], gain, rtol=0, atol=1e-5)
    np.testing.assert_allclose(data["target"][rows], gain - 0.5 * relcost, rtol=0, atol=1e-5)
    pns = model.patch_nums  # SRDD, depth 1: the round is one more pass of scale k
    assert relcost == pytest.approx(scale_flops(model, k, pns, 6) / sum(scale_flops(model, s, pns, 6) for s in range(K)))
    report = evaluate_policy(policy(), data, data["trajectory"] >= 3, data["trajectory"] < 3)
    g = report["penalised_gain_per_sample"]
    assert g["oracle"] >= max(g["policy"], g["always"], g["never"], g["best_fixed_scale"])
