"""Scale distillation: schedules, the shared prefix, targets made from the teacher's own samples
(a teacher with a known deterministic output gives exactly those targets), the teacher's
per-scale distribution recomputed as the sampler drew from it, the loss, and a few DeepSpeed
steps lowering the student's loss. Resume after SIGKILL and ZeRO-3 export: tests/test_harness.py;
the student sampling on its own schedule through the CLI: tests/test_sample_cli.py."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from pretrain.config.fields import ConfigError
from pretrain.distill import (check_schedule, default_student_schedule, distill_loss, requantize, schedule_model,
                              shared_prefix, teacher_prefix_probs)
from pretrain.distill.task import token_metrics
from pretrain.tokenizer.quantizer import build_phis


def test_default_student_schedules():
    assert default_student_schedule((1, 2, 3, 4, 5, 6, 8, 10, 13, 16)) == (1, 3, 5, 8, 13, 16)
    assert default_student_schedule((1, 2, 3, 4, 6, 8)) == (1, 3, 6, 8)
    with pytest.raises(ConfigError, match="end"):
        check_schedule((1, 3, 6), (1, 2, 3, 4, 6, 8))


def test_shared_prefix_needs_the_same_sides_and_phi_convs():
    """Scale j's state is the teacher's when sides 0..j agree and scales < j went through the same
    Phi conv (VAR's tick rule picks it by k / (K - 1), so the schedule's length matters)."""
    def vae(share: int, K: int):
        return SimpleNamespace(quantize=SimpleNamespace(quant_resi=build_phis(4, 0.5, share, K)))

    mnist = (1, 2, 3, 4, 6, 8)
    assert shared_prefix(vae(4, 6), mnist, (1, 2, 4, 8)) == 2     # Phi_0 for scale 0 under K = 6 and K = 4
    assert shared_prefix(vae(4, 6), mnist, (1, 3, 6, 8)) == 1
    assert shared_prefix(vae(4, 6), mnist, (1, 2, 3, 8)) == 2     # scale 1: tick 1/5 -> Phi_0, 1/3 -> Phi_1
    assert shared_prefix(vae(1, 6), mnist, (1, 2, 3, 8)) == 3     # one shared Phi: only the sides matter
    var = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    assert shared_prefix(vae(4, 10), var, (1, 3, 5, 8, 13, 16)) == 1


@pytest.fixture(scope="module")
def teacher_and_data(tiny_srdd_model):
    cfg, vae, teacher = tiny_srdd_model()
    torch.manual_seed(1)
    pyr = vae.encode_pyramid(torch.rand(16, 3, 32, 32) * 2 - 1)
    return cfg, vae, teacher, (torch.arange(16) % 10, pyr)


def test_student_copies_teacher_positions_and_levels_per_side(teacher_and_data):
    _, _, teacher, _ = teacher_and_data
    s_pns = (1, 3, 6, 8)
    student = schedule_model(teacher, s_pns)
    assert student.patch_nums == s_pns and student.attn_window == teacher.attn_window
    for j, pn in enumerate(s_pns):
        k = teacher.patch_nums.index(pn)
        (b, e), (sb, se) = teacher.begin_ends[k], student.begin_ends[j]
        assert torch.equal(student.pos_1LC[0, sb:se], teacher.pos_1LC[0, b:e])
        assert torch.equal(student.lvl_embed.weight[j], teacher.lvl_embed.weight[k])
    assert torch.equal(student.blocks[0].attn.mat_qkv.weight, teacher.blocks[0].attn.mat_qkv.weight)
    # a side the teacher lacks takes the nearest side's block, resized
    odd = schedule_model(teacher, (1, 5, 8))
    assert odd.pos_1LC.shape[1] == 1 + 25 + 64


def residual_codes(vae, f_BChw: torch.Tensor, pns, prefix) -> list[torch.Tensor]:
    """VAR's Alg. 1 written out independently: keep ``prefix``'s codes, then per scale the code
    (L2-nearest embedding) of the area-downsampled residual; the last scale at full resolution."""
    E_VC = vae.quantize.embedding.weight
    f_hat, out = None, []
    for k, pn in enumerate(pns):
        if k < len(prefix):
            idx = prefix[k]
        else:
            rest = f_BChw - (0 if f_hat is None else f_hat)
            z = rest if k == len(pns) - 1 else F.interpolate(rest, size=(pn, pn), mode="area")
            z_NC = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
            idx = torch.cdist(z_NC, E_VC).argmin(1).view(len(f_BChw), pn * pn)
        out.append(idx)
        f_hat = vae.add_scale(f_hat, idx, k, pns)
    return out


def test_requantised_pyramid_is_the_student_quantisation_of_the_same_latent(teacher_and_data):
    _, vae, teacher, (_, pyr) = teacher_and_data
    s_pns = (1, 3, 6, 8)
    with torch.no_grad():
        idx = requantize(vae, pyr, teacher.patch_nums, s_pns)
        expected = residual_codes(vae, vae.fhat_from_pyramid(pyr), s_pns, [])
    assert [t.shape[1] for t in idx] == [1, 9, 36, 64]
    agree = torch.cat([(a == b).float().flatten() for a, b in zip(idx, expected)]).mean()
    assert agree > 0.99, agree  # nearest-code near-ties may resolve differently (addmm vs cdist rounding)


def test_targets_are_the_teachers_codes(teacher_and_data, tiny_tokenizer_ckpt, tmp_path):
    """A teacher whose every draw is code 7 (head = a bias on 7): its generated shards hold exactly
    its codes, the student's targets on the shared prefix are those codes and on later scales the
    residual quantisation of the latent they make, not anything from data."""
    from data_pipeline.pyramid_shards.loader import PyramidLoader
    from pretrain.config import load_config
    from pretrain.distill.teacher_samples import ensure_teacher_samples
    from pretrain.tokenizer import tokenizer_hash
    from pretrain.train.export import save_model

    cfg, vae, teacher, _ = teacher_and_data
    teacher = schedule_model(teacher, teacher.patch_nums).eval()  # a copy this test may change
    with torch.no_grad():
        teacher.head.weight.zero_()
        teacher.head.bias.zero_()
        teacher.head.bias[7] = 60.0  # softmax puts 1 - 1e-24 on code 7, with or without guidance
    run = tmp_path / "teacher"
    save_model(run / "model.pt", teacher.state_dict(), cfg, 0, 0, tokenizer_hash(tiny_tokenizer_ckpt))
    sample_cfg = load_config(overrides=["sample.cfg=2.0", "sample.batch_size=4"]).sample
    out = ensure_teacher_samples(teacher, vae, run, tokenizer_hash(tiny_tokenizer_ckpt), sample_cfg, 6, None)
    t_pns, s_pns = teacher.patch_nums, (1, 2, 4, 8)
    P = shared_prefix(vae, t_pns, s_pns)
    assert P == 2
    read = load_config(overrides=[f"data.pyramids_dir={out}"])
    (label_B, idx_list), = list(PyramidLoader(read, split="train", batch_size=6, infinite=False))
    assert sorted(label_B.tolist()) == [0, 1, 2, 3, 4, 5]  # label i mod 10, shuffled by the train stream
    assert all(bool((idx == 7).all()) for idx in idx_list)          # the shards hold the teacher's codes
    with torch.no_grad():
        targets = requantize(vae, idx_list, t_pns, s_pns, keep=P)
        expected = residual_codes(vae, vae.fhat_from_pyramid(idx_list, patch_nums=t_pns), s_pns, idx_list[:P])
    assert all(torch.equal(a, b) for a, b in zip(targets, expected))
    assert all(bool((t == 7).all()) for t in targets[:P])
    # resumable: a second call finds every shard complete and writes nothing
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert ensure_teacher_samples(teacher, vae, run, tokenizer_hash(tiny_tokenizer_ckpt), sample_cfg, 6, None) == out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == stamp


def test_teacher_prefix_probs_are_the_distribution_the_sampler_drew_from(teacher_and_data):
    """Teacher-forced on a sample's own codes, the first P scales' guided, truncated distribution is
    the one the KV-cached sampler drew those codes from (captured by a refine hook)."""
    from pretrain.config import load_config
    from pretrain.sampling.sampler import sample

    _, vae, teacher, _ = teacher_and_data
    s = load_config(overrides=["sample.cfg=3.0", "sample.top_k=50", "sample.temperature=0.8"]).sample
    seen = []

    def capture(step):
        seen.append(step.probs(step.logits_BlV))
        return step.idx_Bl

    label_B = torch.tensor([1, 4, 9])
    _, pyramid = sample(teacher, vae, label_B, cfg=s.cfg, top_k=s.top_k, temperature=s.temperature, seed=0,
                        refine=capture, return_pyramid=True)
    probs = teacher_prefix_probs(teacher, vae, label_B, pyramid, 3, s)
    expected = torch.cat(seen[:3], 1)
    assert probs.shape == (3, 1 + 4 + 9, teacher.V)
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=1e-5)
    assert float(seen[1][0].max()) < 1  # a real distribution, guided (t_1 = 3/5) and truncated
    assert int((seen[1][0, 0] > 0).sum()) == 50


def test_distill_loss_is_ce_plus_kl_on_the_prefix_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    target = torch.randint(0, 7, (2, 5))
    p = torch.softmax(torch.randn(2, 2, 7), -1)
    loss, parts = distill_loss(logits, target, p, kl_weight=0.5, tau=1.0, label_smoothing=0.0)
    kl_tokens = F.kl_div(F.log_softmax(logits[:, :2], -1), p, reduction="none").sum(-1)  # (2, 2)
    kl = float(kl_tokens.sum() / 10)
    assert parts["kl"] == pytest.approx(kl, rel=1e-5)
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits.flatten(0, 1), target.flatten())) + 0.5 * kl, rel=1e-5)
    same, parts = distill_loss(torch.log(p).repeat(1, 3, 1)[:, :5], target, p, 1.0, 2.0, 0.0)
    assert parts["kl"] == pytest.approx(0.0, abs=1e-6)  # the teacher's own distribution: no KL at any tau


def test_distillation_lowers_the_student_loss(teacher_and_data):
    from pretrain.dist import init_distributed
    from pretrain.engine import build_engine

    cfg, vae, teacher, (label, pyr) = teacher_and_data
    cfg.train.batch_size, cfg.train.lr_peak, cfg.train.warmup_frac = 16, 3e-3, 0.0
    s_pns = (1, 2, 4, 8)
    P = shared_prefix(vae, teacher.patch_nums, s_pns)
    with torch.no_grad():
        s_idx = requantize(vae, pyr, teacher.patch_nums, s_pns, keep=P)
        x = vae.pyramid_to_var_input(s_idx, s_pns)
        probs = teacher_prefix_probs(teacher, vae, label, pyr, P, cfg.sample)
    student = schedule_model(teacher, s_pns).train()
    before = token_metrics(student, vae, [(label, s_idx)])["loss"]
    info = init_distributed()
    engine = build_engine(student, cfg.train, total_steps=15, world_size=info.world_size)
    for _ in range(15):
        loss, parts = distill_loss(engine(label, x), torch.cat(s_idx, 1), probs, 0.5, 1.0, 0.0)
        engine.backward(loss)
        engine.step()
    after = token_metrics(student, vae, [(label, s_idx)])["loss"]
    assert after < before - 0.5, (before, after)
