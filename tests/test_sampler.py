"""The KV-cached sampler core: VAR equality, cache == full forward per window, CFG, seeds, hook."""
from __future__ import annotations

import pytest
import torch

from pretrain.sampling import ScaleStep, guidance_weights, sample
from pretrain.pyramid.heads import truncated_probs
from tests.fixtures.var_model_reference.reference import load_model_reference, reference_model, reference_vae


@pytest.fixture(scope="module")
def ref():
    return load_model_reference()


@pytest.fixture(scope="module")
def vae():
    return reference_vae()


class Recorder:
    """A refine hook that keeps each scale's guided logits and changes nothing."""

    def __init__(self):
        self.logits: list[torch.Tensor] = []

    def __call__(self, step: ScaleStep) -> torch.Tensor:
        self.logits.append(step.logits_BlV)
        return step.idx_Bl


def test_top_k1_equals_var_autoregressive_infer_cfg(ref, vae):
    """VAR's defaults (cfg 1.5, linear ramp), top_k=1: same tokens and image as VAR's own sampler."""
    model = reference_model(ref=ref)
    img, idx = sample(model, vae, ref["label_B"], cfg=1.5, top_k=1, seed=0, return_pyramid=True)
    for k, (ours, theirs) in enumerate(zip(idx, ref["infer_idx"], strict=True)):
        assert torch.equal(ours, theirs), f"scale {k}"
    torch.testing.assert_close(img * 0.5 + 0.5, ref["infer_img_01"], rtol=0, atol=1e-4)  # VAR returns [0, 1]


def test_top_k1_is_deterministic_across_seeds(ref, vae):
    model = reference_model(ref=ref)
    runs = [sample(model, vae, ref["label_B"], top_k=1, seed=s, return_pyramid=True)[1] for s in (0, 0, 5)]
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(runs[0], run))


def test_seed_fixes_the_draw(ref, vae):
    model = reference_model(ref=ref)
    a, b, c = (torch.cat(sample(model, vae, ref["label_B"], seed=s, return_pyramid=True)[1], 1) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("attn_impl", ["auto", "dense"])
@pytest.mark.parametrize("window", [None, 0, 1])
def test_cached_sampling_equals_uncached_forward(ref, vae, window, attn_impl):
    """Teacher-force the sampled pyramid through the full masked forward (either attention path):
    every scale's guided logits equal (1 + t_k) * cond - t_k * uncond computed without any cache."""
    model = reference_model(attn_window=window, ref=ref, attn_impl=attn_impl)
    rec = Recorder()
    _, idx = sample(model, vae, ref["label_B"], cfg=1.5, seed=3, refine=rec, return_pyramid=True)
    x_BLCv = vae.pyramid_to_var_input(idx, model.patch_nums)
    with torch.no_grad():
        cond = model(ref["label_B"], x_BLCv)
        uncond = model(torch.full_like(ref["label_B"], model.num_classes), x_BLCv)
    ts = guidance_weights(1.5, len(model.patch_nums))
    for k, (begin, end) in enumerate(model.begin_ends):
        full = (1 + ts[k]) * cond[:, begin:end] - ts[k] * uncond[:, begin:end]
        torch.testing.assert_close(rec.logits[k], full, rtol=0, atol=1e-5, msg=f"window {window}, {attn_impl}, scale {k}")
        assert torch.equal(rec.logits[k].argmax(-1), full.argmax(-1))


@pytest.mark.parametrize("window", [None, 0, 1])
def test_kv_cache_peak_keeps_only_the_window(ref, vae, window):
    model = reference_model(attn_window=window, ref=ref)
    stats: dict = {}
    sample(model, vae, ref["label_B"], cfg=1.5, seed=0, stats=stats)
    pns, B = model.patch_nums, len(ref["label_B"])
    per_token = model.depth * 2 * (2 * B) * model.C * 4  # layers x (k, v) x guided rows x width x fp32
    visible = [sum(p * p for p in pns[(0 if window is None else max(0, k - window)):k + 1]) for k in range(len(pns))]
    assert stats["kv_cache_bytes_peak"] == per_token * max(visible)
    assert stats["passes"] == len(pns) and stats["loop_s"] > 0 and stats["decode_s"] > 0
    assert stats["rows"] == 2 * B * model.L


def test_cfg_zero_equals_the_conditional_model(ref, vae):
    model = reference_model(ref=ref)
    _, idx0 = sample(model, vae, ref["label_B"], cfg=0.0, top_k=1, return_pyramid=True)
    _, idx_off = sample(model, vae, ref["label_B"], cfg=3.0, cfg_schedule="off", top_k=1, return_pyramid=True)
    with torch.no_grad():
        cond = model(ref["label_B"], vae.pyramid_to_var_input(idx0, model.patch_nums))
    for k, (begin, end) in enumerate(model.begin_ends):
        assert torch.equal(idx0[k], cond[:, begin:end].argmax(-1)), f"scale {k}"
        assert torch.equal(idx0[k], idx_off[k])


def test_guidance_schedules():
    assert guidance_weights(1.5, 4) == [0.0, 0.5, 1.0, 1.5]  # VAR's ramp t_k = cfg * k / (K - 1)
    assert guidance_weights(1.5, 4, "constant") == [1.5] * 4
    assert guidance_weights(1.5, 4, "off") == [0.0] * 4
    with pytest.raises(ValueError, match="cfg_schedule='cosine'"):
        guidance_weights(1.5, 4, "cosine")


def test_truncation_top_k_top_p_temperature():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    assert torch.allclose(truncated_probs(logits, top_k=2), torch.tensor([[[0.625, 0.375, 0, 0]]]))
    assert torch.allclose(truncated_probs(logits, top_p=0.7), torch.tensor([[[0.625, 0.375, 0, 0]]]))  # 0.5 + 0.3 >= 0.7
    assert torch.allclose(truncated_probs(logits, top_p=0.4), torch.tensor([[[1.0, 0, 0, 0]]]))
    sharp = truncated_probs(logits, temperature=0.5)
    assert torch.allclose(sharp, torch.tensor([0.25, 0.09, 0.0225, 0.0025]) / 0.365)


def test_refine_hook_sees_its_scale_and_its_tokens_are_used(ref, vae):
    model = reference_model(attn_window=None, ref=ref)
    seen = []

    def hook(step: ScaleStep) -> torch.Tensor:
        seen.append((step.k, step.visit, step.rows_B.tolist()))
        assert step.guided_batch == 2 * len(step.label_B) and step.probs(step.logits_BlV).shape == step.logits_BlV.shape
        assert step.t == guidance_weights(1.5, len(model.patch_nums))[step.k]
        return torch.zeros_like(step.idx_Bl)

    stats: dict = {}
    img, idx = sample(model, vae, ref["label_B"], seed=0, refine=hook, return_pyramid=True, stats=stats)
    B = len(ref["label_B"])
    assert seen == [(k, 0, list(range(B))) for k in range(len(model.patch_nums))]
    assert all(int(t.abs().sum()) == 0 for t in idx)
    assert stats["passes"] == stats["base_passes"] == len(model.patch_nums) and stats["refine_passes"] == 0
    torch.testing.assert_close(img, vae.decode_pyramid(idx, model.patch_nums), rtol=0, atol=1e-5)


def test_schedule_is_a_subsequence_of_the_models_scales(ref, vae):
    model = reference_model(attn_window=0, ref=ref)
    img, idx = sample(model, vae, ref["label_B"], seed=0, schedule=[1, 2, 4, 8], return_pyramid=True)
    assert [t.shape[1] for t in idx] == [1, 4, 16, 64] and img.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="schedule=\\[1, 5, 8\\]"):
        sample(model, vae, ref["label_B"], schedule=[1, 5, 8])
    with pytest.raises(ValueError, match="class ids in \\[0, 10\\]"):
        sample(model, vae, torch.tensor([11]))


def test_sample_in_batches_is_per_chunk_sample_with_every_setting(ref, vae):
    """The loop behind `srdd sample` / `eval` / `ablate`: chunk i = sample(seed + i) with the config's
    schedule and refinement; stats sum over chunks, peaks take the max."""
    from pretrain.sampling.batches import sample_in_batches
    from pretrain.config.sample import SampleConfig
    from pretrain.sampling.refine import RefineCost, RestartSchedule

    model = reference_model(attn_window=0, ref=ref)
    s = SampleConfig(batch_size=2, seed=7, schedule=[1, 2, 4, 8], refine="sr", top_k=5)
    labels_N = torch.tensor([0, 1, 2, 3, 4])
    stats, cost = {}, RefineCost()
    chunks = list(sample_in_batches(model, vae, labels_N, s, cost, stats))
    assert [img.shape[0] for img, _ in chunks] == [2, 2, 1]
    passes, flops, peak = 0, 0, 0
    for i, (img, idx) in zip((0, 2, 4), chunks):
        own: dict = {}
        ref_img, ref_idx = sample(model, vae, labels_N[i:i + 2], seed=7 + i, schedule=[1, 2, 4, 8], top_k=5,
                                  restart=RestartSchedule(1, 1), return_pyramid=True, stats=own)
        assert [t.shape[1] for t in idx] == [1, 4, 16, 64]  # the schedule was used
        assert all(torch.equal(a, b) for a, b in zip(idx, ref_idx)) and torch.equal(img, ref_img)
        passes, flops, peak = passes + own["passes"], flops + own["flops"], max(peak, own["kv_cache_bytes_peak"])
    assert (stats["passes"], stats["flops"], stats["kv_cache_bytes_peak"]) == (passes, flops, peak)
    assert cost.passes == 3 * 4 and cost.restart_rows == 5 * 4  # SR: one more pass per scale and chunk (window 0)
