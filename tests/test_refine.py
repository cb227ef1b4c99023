"""Refinement that changes the state (pretrain/sampling/refine.py, sampler.py): restart re-enters the
re-quantised Markov state and pays for the prefix keys/values a non-Markov mask needs; the draft
pass at sampling is the objective's draft stream; the one-pass baseline is the old same-state MR in
distribution. Tiny d1 models over the tiny (random-init) tokenizer: the mechanics, not quality."""
from __future__ import annotations

import pytest
import torch

from pretrain.config import load_config
from pretrain.model import build_model
from pretrain.sampling.batches import build_refiner
from pretrain.sampling.refine import RestartSchedule, SelfCorrect, mr_equivalent
from pretrain.sampling.sampler import guidance_weights, sample
from pretrain.tokenizer import load_tokenizer

MASKS = {"srdd": ["model.mask=srdd"], "var": ["model.mask=var"], "window1": ["model.mask=window", "model.attn_window=1"]}


def tiny(tokenizer_ckpt, mask: str, refine_inputs: bool = False, seed: int = 0):
    """(tokenizer, d1 model) with every weight re-drawn at std 0.1: VAR's init leaves the AdaLN gates
    at 1e-5, where attention to other scales (the keys/values under test) is invisible in the logits."""
    cfg = load_config(overrides=["model.size=d1", *MASKS[mask]])
    vae = load_tokenizer(tokenizer_ckpt)
    torch.manual_seed(seed)
    model = build_model(cfg.model, vae.vocab_size, vae.Cvae, vae.patch_nums, refine_inputs=refine_inputs).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "scale_mul" not in name:
                p.normal_(0.0, 0.1)
    return vae, model


class Record:
    """A refine hook keeping (k, visit, rows, logits) of every draw; changes nothing."""

    def __init__(self):
        self.draws = []

    def __call__(self, step):
        self.draws.append((step.k, step.visit, step.rows_B.clone(), step.logits_BlV.clone()))
        return step.idx_Bl


class RestartAt(RestartSchedule):
    """Restart every row at scale ``k`` only."""

    def __init__(self, k: int, depth: int = 1):
        super().__init__(1, depth)
        self.k = k

    def select(self, step):
        return torch.full((len(step.label_B),), step.k == self.k, dtype=torch.bool)


def teacher_forced(model, vae, label_B, pyramid):
    """Conditional logits of every scale for a given pyramid, with no cache (the reference path)."""
    with torch.no_grad():
        return model(label_B, vae.pyramid_to_var_input(pyramid, model.patch_nums))


@pytest.mark.parametrize("mask", list(MASKS))
def test_restart_one_scale_back_reenters_the_requantised_state(tiny_tokenizer_ckpt, mask):
    """j = k - 1 on a deterministic model (argmax draws, no guidance): the restart's pass at scale k
    sees the state re-quantised from f_hat after k's draft; it equals the plain pass exactly when
    that state's tokens are the original ones and differs from it otherwise. The expected logits come
    from teacher forcing the re-quantised prefix without any cache, so under block-causal and window
    masks this also checks the recomputed prefix keys/values."""
    vae, model = tiny(tiny_tokenizer_ckpt, mask)
    label_B = torch.tensor([0, 3, 7])
    kw = dict(cfg=0.0, top_k=1, seed=0, return_pyramid=True)
    _, plain = sample(model, vae, label_B, **kw)
    same = differ = 0
    for k in range(len(model.patch_nums)):
        rec = Record()
        sample(model, vae, label_B, refine=rec, restart=RestartAt(k), **kw)
        first, again = [d[3] for d in rec.draws if d[0] == k]
        f_hat = vae.fhat_from_pyramid(plain[:k + 1], upto=k + 1)
        requant = vae.quantize.quantize(f_hat, model.patch_nums, with_fhat=False)[0][:k]
        expect = teacher_forced(model, vae, label_B, requant + plain[k:])[:, slice(*model.begin_ends[k])]
        torch.testing.assert_close(again, expect, rtol=0, atol=1e-5, msg=f"{mask}: scale {k}")
        if all(torch.equal(a, b) for a, b in zip(requant, plain[:k])):
            assert torch.equal(again, first), f"{mask}: scale {k} re-entered an unchanged state"
            same += 1
        else:
            assert not torch.allclose(again, first, atol=1e-4), f"{mask}: scale {k}: the state changed, the input did not"
            differ += 1
    assert same >= 1 and differ >= 1, (same, differ)  # both branches exercised


def test_restart_kv_recompute_is_counted_per_mask(tiny_tokenizer_ckpt):
    """The prefix keys/values a restart at scale k needs: none under SRDD's Markovian mask; under
    block-causal the prefix scales from the first whose input changed, counted with their FLOPs
    (2 N_nonembed + 4 depth width keys per token, guided batch); under window 1 every prefix scale.
    The regenerated scales' guided logits equal teacher forcing of the restarted pyramid (no cache),
    so the recomputed (and the reused) keys/values are the right ones."""
    label_B = torch.tensor([1, 2])
    B2 = 2 * len(label_B)  # guided batch
    totals = {}
    for mask in MASKS:
        vae, model = tiny(tiny_tokenizer_ckpt, mask)
        pns, n = model.patch_nums, model.num_non_embedding_params()
        ts = guidance_weights(1.5, len(pns))
        _, plain = sample(model, vae, label_B, seed=0, top_k=1, return_pyramid=True)
        for k in range(1, len(pns)):
            stats, rec = {}, Record()
            _, pyramid = sample(model, vae, label_B, seed=0, top_k=1, restart=RestartAt(k, depth=2), stats=stats,
                                refine=rec, return_pyramid=True)
            cond = teacher_forced(model, vae, label_B, pyramid)
            uncond = teacher_forced(model, vae, torch.full_like(label_B, model.num_classes), pyramid)
            for s, visit, _, logits in rec.draws:
                if visit == 1 and s <= k:
                    b, e = model.begin_ends[s]
                    guided = (1 + ts[s]) * cond[:, b:e] - ts[s] * uncond[:, b:e]
                    torch.testing.assert_close(logits, guided, rtol=0, atol=1e-5, msg=f"{mask}: restart at {k}, scale {s}")
            j = k - 1  # depth 2: scales k-1, k regenerated from the state re-quantised on scales < k-1
            requant = vae.quantize.quantize(vae.fhat_from_pyramid(plain[:k + 1], upto=k + 1), pns, with_fhat=False)[0][:j]
            first_changed = next((s for s in range(j) if not torch.equal(requant[s], plain[s])), j)
            recomputed = {"srdd": [], "var": list(range(min(first_changed + 1, j), j)), "window1": list(range(j))}[mask]
            keys = lambda s: sum(p * p for p in pns[(0 if mask == "var" else max(0, s - 1)):s + 1])  # noqa: E731
            expect = sum(B2 * pns[s] ** 2 * (2 * n + 4 * model.depth * model.C * keys(s)) for s in recomputed)
            assert stats["kv_recompute_passes"] == len(recomputed), (mask, k)
            assert stats["kv_recompute_flops"] == expect, (mask, k)
            assert stats["refine_passes"] == 2 and stats["restart_rows"] == len(label_B)
            totals[mask] = totals.get(mask, 0) + stats["kv_recompute_flops"]
    assert totals["srdd"] == 0 < totals["var"] <= totals["window1"]


def test_restart_rounds_and_scale_range_through_the_config(tiny_tokenizer_ckpt):
    vae, model = tiny(tiny_tokenizer_ckpt, "srdd")
    cfg = load_config(overrides=["sample.refine=sr", "sample.refine_rounds=2", "sample.refine_scales=[2,4]"])
    refinement = build_refiner(cfg.sample, model)
    rec, stats = Record(), {}
    sample(model, vae, torch.tensor([0, 1]), seed=1, refine=rec, restart=refinement.restart, stats=stats)
    refinement.cost.add_stats(stats)
    visits = {}
    for k, visit, *_ in rec.draws:
        visits[k] = max(visits.get(k, -1), visit)
    assert visits == {0: 0, 1: 0, 2: 2, 3: 2, 4: 2, 5: 0}  # depth 1: each round redraws scale k only
    assert refinement.cost.passes == 6 and refinement.cost.passes_per_scale == {2: 2, 3: 2, 4: 2}
    assert refinement.cost.restart_rows == 2 * 3 * 2 and refinement.cost.kv_recompute_passes == 0


@pytest.mark.parametrize("mask", ["srdd", "var"])
def test_draft_pass_at_sampling_is_the_objectives_draft_stream(tiny_tokenizer_ckpt, mask):
    """What self-correction runs at scale k (cached prefix, draft in the input, nothing staged) equals
    the teacher-forced draft stream ``Transformer.forward(draft=...)`` the objective trains."""
    vae, model = tiny(tiny_tokenizer_ckpt, mask, refine_inputs=True)
    label_B = torch.tensor([4, 5])
    keep_by_k, seen = {}, {}

    def hook(step):
        g = torch.Generator().manual_seed(step.k)
        keep = torch.rand(step.idx_Bl.shape, generator=g) < 0.5
        keep_by_k[step.k] = keep
        seen[step.k] = step.forward_draft(step.idx_Bl, keep)
        return step.idx_Bl

    _, pyramid = sample(model, vae, label_B, cfg=0.0, seed=0, refine=hook, return_pyramid=True)
    delta = torch.cat([vae.draft_delta(pyramid[k], keep_by_k[k], k) for k in range(len(pyramid))], dim=1)
    masked = ~torch.cat([keep_by_k[k] for k in range(len(pyramid))], dim=1)
    with torch.no_grad():
        clean, draft = model(label_B, vae.pyramid_to_var_input(pyramid), draft=(delta, masked))
    torch.testing.assert_close(clean, teacher_forced(model, vae, label_B, pyramid), rtol=0, atol=1e-5)
    for k, (b, e) in enumerate(model.begin_ends):
        torch.testing.assert_close(seen[k], draft[:, b:e], rtol=0, atol=1e-5, msg=f"{mask}: scale {k}")


def test_self_correction_refuses_a_model_without_draft_inputs_and_p0_costs_nothing(tiny_tokenizer_ckpt):
    vae, model = tiny(tiny_tokenizer_ckpt, "srdd")
    with pytest.raises(Exception, match="train.refine_objective"):
        build_refiner(load_config(overrides=["sample.refine=mr"]).sample, model)
    vae, model = tiny(tiny_tokenizer_ckpt, "srdd", refine_inputs=True)
    hook, stats = SelfCorrect(p_resample=0.0, rounds=3), {}
    _, a = sample(model, vae, torch.tensor([1]), seed=2, refine=hook, return_pyramid=True, stats=stats)
    _, b = sample(model, vae, torch.tensor([1]), seed=2, return_pyramid=True)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and stats["refine_passes"] == 0


def test_self_correction_redraws_only_removed_tokens(tiny_tokenizer_ckpt):
    vae, model = tiny(tiny_tokenizer_ckpt, "srdd", refine_inputs=True)
    first = {}

    def spy(step):
        probs = step.probs(step.logits_BlV).gather(-1, step.idx_Bl[..., None])[..., 0]
        first[step.k] = (step.idx_Bl.clone(), probs >= 0.01)
        return SelfCorrect(p_resample=0.01, rounds=1)(step)

    _, pyramid = sample(model, vae, torch.tensor([2, 6]), seed=0, refine=spy, return_pyramid=True)
    for k, (idx, kept) in first.items():
        assert torch.equal(pyramid[k][kept], idx[kept]), f"scale {k}: a kept token changed"
    assert any(not kept.all() for _, kept in first.values())  # something was removed


def test_onepass_equals_same_state_masked_resampling_in_distribution():
    """Independent check of ``mr_equivalent``: simulate the old MR (draw; while the token's
    probability < p_resample, draw again from the same distribution, at most R times)."""
    p = torch.tensor([0.45, 0.3, 0.1, 0.08, 0.07])
    g = torch.Generator().manual_seed(0)
    for rounds in (1, 2, 4):
        x = torch.multinomial(p, 200_000, replacement=True, generator=g)
        for _ in range(rounds):
            redo = p[x] < 0.2
            x = torch.where(redo, torch.multinomial(p, len(x), replacement=True, generator=g), x)
        empirical = torch.bincount(x, minlength=len(p)).float() / len(x)
        q = mr_equivalent(p.view(1, 1, -1), 0.2, rounds).view(-1)
        assert q.sum().item() == pytest.approx(1.0, abs=1e-6)
        torch.testing.assert_close(empirical, q, rtol=0, atol=3e-3)
    assert torch.allclose(mr_equivalent(p.view(1, 1, -1), 0.0, 3).view(-1), p)  # threshold 0: unchanged


def test_onepass_costs_no_pass(tiny_tokenizer_ckpt):
    vae, model = tiny(tiny_tokenizer_ckpt, "srdd")
    refinement = build_refiner(load_config(overrides=["sample.refine=onepass", "sample.p_resample=0.3"]).sample, model)
    stats = {}
    sample(model, vae, torch.tensor([0, 1]), seed=0, refine=refinement.hook, stats=stats)
    assert stats["passes"] == len(model.patch_nums) and stats["refine_passes"] == 0
