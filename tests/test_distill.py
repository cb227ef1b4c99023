"""Scale distillation: schedule defaults, the teacher's position/level re-indexing, re-quantised
data, and a few DeepSpeed steps of the distillation loss lowering the student's loss."""
from __future__ import annotations

import pytest
import torch

from pretrain.config.fields import ConfigError
from pretrain.distill import (check_schedule, default_student_schedule, distill_loss, requantize, schedule_model,
                              token_metrics)


def test_default_student_schedules():
    assert default_student_schedule((1, 2, 3, 4, 5, 6, 8, 10, 13, 16)) == (1, 3, 5, 8, 13, 16)
    assert default_student_schedule((1, 2, 3, 4, 6, 8)) == (1, 3, 6, 8)
    with pytest.raises(ConfigError, match="end"):
        check_schedule((1, 3, 6), (1, 2, 3, 4, 6, 8))


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


def test_requantised_pyramid_is_the_student_quantisation_of_the_same_latent(teacher_and_data):
    _, vae, teacher, (_, pyr) = teacher_and_data
    s_pns = (1, 3, 6, 8)
    with torch.no_grad():
        idx = requantize(vae, pyr, teacher.patch_nums, s_pns)
    assert [t.shape[1] for t in idx] == [1, 9, 36, 64]
    with torch.no_grad():
        f_t = vae.fhat_from_pyramid(pyr)  # the latent the stored teacher pyramid encodes
        # scale 0 (1x1) independently: the code nearest (L2) to the latent's mean vector
        mean_BC = f_t.mean((2, 3))
        nearest = torch.cdist(mean_BC, vae.quantize.embedding.weight).argmin(1)
    assert torch.equal(idx[0][:, 0], nearest)


def test_distillation_lowers_the_student_loss(teacher_and_data):
    from pretrain.dist import init_distributed
    from pretrain.engine import build_engine

    cfg, vae, teacher, (label, pyr) = teacher_and_data
    cfg.train.batch_size, cfg.train.lr_peak, cfg.train.warmup_frac = 16, 3e-3, 0.0
    s_pns = (1, 3, 6, 8)
    with torch.no_grad():
        s_idx = requantize(vae, pyr, teacher.patch_nums, s_pns)
        x = vae.pyramid_to_var_input(s_idx, s_pns)
    teacher_view = schedule_model(teacher, s_pns).eval().requires_grad_(False)
    student = schedule_model(teacher, s_pns).train()
    before = token_metrics(student, vae, [(label, s_idx)])["loss"]
    info = init_distributed()
    engine = build_engine(student, cfg.train, total_steps=15, world_size=info.world_size)
    with torch.no_grad():
        t_logits = teacher_view(label, x)
    for _ in range(15):
        loss, parts = distill_loss(engine(label, x), t_logits, torch.cat(s_idx, 1), 0.5, 1.0, 0.0)
        engine.backward(loss)
        engine.step()
    after = token_metrics(student, vae, [(label, s_idx)])["loss"]
    assert after < before - 0.5, (before, after)
