"""Teacher-forcing attention paths (docs/model.md): the tiles that skip masked pairs equal the dense
-inf mask (forward, backward, every window, odd and repeated scale sizes, fp32 and bf16), executed
FLOPs match an independent count, checkpoints cross-load between paths, torch.compile equals eager."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pretrain.model import Transformer
from pretrain.model.attention import masked_attention
from pretrain.model.flops import executed_attention_pairs, executed_forward_flops_per_sample
from pretrain.model.masks import attention_tiles, attn_bias
from pretrain.model.tiled_attention import group_tiles, tiled_attention
from tests.fixtures.var_model_reference.reference import load_model_reference, reference_model

ODD = (1, 3, 5, 7)           # 1, 9, 25, 49 tokens: no tile is a multiple of any kernel block
REPEATED = (1, 3, 3, 5, 5)   # equal-size scales: window 0 stacks them into one call
WINDOWS = [None, 0, 1, 2]    # block-causal (VAR), block-diagonal (SRDD), own + 1, own + 2 scales


def qkv(patch_nums, dtype=torch.float32, B=2, H=3, c=16, seed=0) -> list[torch.Tensor]:
    """VAR's attention inputs: unit q scaled by a per-head temperature, unit k, any v."""
    g = torch.Generator().manual_seed(seed)
    L = sum(p * p for p in patch_nums)
    q, k, v = (torch.randn(B, H, L, c, generator=g) for _ in range(3))
    scale_1H11 = torch.tensor([4.0, 12.0, 40.0]).view(1, H, 1, 1)
    q = torch.nn.functional.normalize(q, dim=-1) * scale_1H11
    k = torch.nn.functional.normalize(k, dim=-1)
    return [t.to(dtype).requires_grad_() for t in (q, k, v)]


def assert_close_to_scale(a: torch.Tensor, b: torch.Tensor, name: str, tol: float = 1e-5) -> None:
    """Equal within ``tol`` of the tensor's largest magnitude (absolute below 1): gradients of a
    temperature-40 head reach ~100, where fp32 summation order alone moves the 7th digit."""
    err, scale = (a - b).abs().max().item(), max(1.0, b.abs().max().item())
    assert err <= tol * scale, f"{name}: max |diff| {err:.3g} > {tol} x {scale:.3g}"


def out_and_grads(fn, q, k, v, seed=1) -> list[torch.Tensor]:
    out = fn(q, k, v)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    return [out.detach(), *grads]


@pytest.mark.parametrize("patch_nums", [ODD, REPEATED], ids=["odd", "repeated"])
@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"w{w}")
@pytest.mark.parametrize("fused_cpu", [True, False], ids=["cpu-fused", "per-tile-sdpa"])
def test_tiled_attention_equals_the_dense_mask_forward_and_backward(patch_nums, window, fused_cpu):
    q, k, v = qkv(patch_nums)
    bias = attn_bias(patch_nums, window)
    dense = out_and_grads(lambda *t: masked_attention(*t, bias_11LL=bias), q, k, v)
    groups = group_tiles(attention_tiles(patch_nums, window))
    tiled = out_and_grads(lambda *t: tiled_attention(*t, groups=groups, fused_cpu=fused_cpu), q, k, v)
    for name, a, b in zip(("out", "dq", "dk", "dv"), tiled, dense):
        assert_close_to_scale(a, b, f"{name}, window {window}")


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"w{w}")
def test_tiles_cover_exactly_the_pairs_the_mask_allows(window):
    for pns in (ODD, REPEATED, (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)):
        allowed_LL = attn_bias(pns, window)[0, 0] == 0
        covered_LL = torch.zeros_like(allowed_LL, dtype=torch.int)
        for t in attention_tiles(pns, window):
            covered_LL[t.q_begin:t.q_end, t.k_begin:t.k_end] += 1
        assert torch.equal(covered_LL, allowed_LL.int())  # every allowed pair once, no hidden pair
        assert executed_attention_pairs(pns, window, "auto") == int(allowed_LL.sum())
        assert executed_attention_pairs(pns, window, "dense") == allowed_LL.numel()


def test_equal_size_scales_run_as_one_call():
    shapes = [[(t.q_end - t.q_begin, t.k_end - t.k_begin) for t in g] for g in group_tiles(attention_tiles(REPEATED, 0))]
    assert shapes == [[(1, 1)], [(9, 9), (9, 9)], [(25, 25), (25, 25)]]
    assert all(len(g) == 1 for g in group_tiles(attention_tiles(REPEATED, 1)))  # prefixes differ in length


def test_bf16_paths_run_in_bf16_and_agree():
    """The new paths take bf16 q/k/v (DeepSpeed's bf16 casts the model); the fused kernels
    accumulate the softmax in fp32, so both paths agree to bf16 rounding of the output."""
    q, k, v = qkv(ODD, dtype=torch.bfloat16)
    for window in WINDOWS:
        dense = out_and_grads(lambda *t: masked_attention(*t, bias_11LL=attn_bias(ODD, window)), q, k, v)
        groups = group_tiles(attention_tiles(ODD, window))
        for fused_cpu in (True, False):
            tiled = out_and_grads(lambda *t: tiled_attention(*t, groups=groups, fused_cpu=fused_cpu), q, k, v)
            for a, b in zip(tiled, dense):
                assert a.dtype == torch.bfloat16
                assert_close_to_scale(a.float(), b.float(), f"bf16 window {window}", tol=1e-2)  # bf16: 8 bits


# ---- the model -----------------------------------------------------------------------------------
def lively_model(window, patch_nums=ODD, impl="auto") -> Transformer:
    """A small transformer whose AdaLN gates are open (VAR's init leaves blocks near identity,
    where attention would hardly reach the logits)."""
    torch.manual_seed(0)
    model = Transformer(vocab_size=40, z_channels=4, patch_nums=patch_nums, depth=2, width=48, heads=3,
                        num_classes=5, attn_window=window, cond_drop=0.0, attn_impl=impl)
    with torch.no_grad():
        for block in model.blocks:
            block.ada_lin[-1].weight.normal_(std=0.05)
        model.head.weight.normal_(std=0.05)
    return model


def logits_and_grads(model: Transformer, seed=0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    label_B = torch.tensor([1, 4])
    x_BLCv = torch.randn(2, model.L - model.first_l, model.Cvae, generator=g)
    model.zero_grad(set_to_none=True)
    logits_BLV = model(label_B, x_BLCv)
    (logits_BLV * torch.randn(logits_BLV.shape, generator=g)).sum().backward()
    return logits_BLV.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("patch_nums", [ODD, REPEATED], ids=["odd", "repeated"])
@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"w{w}")
def test_model_auto_equals_dense_logits_and_every_gradient(window, patch_nums):
    model = lively_model(window, patch_nums)
    auto_logits, auto_grads = logits_and_grads(model)
    model.attn_impl = "dense"
    dense_logits, dense_grads = logits_and_grads(model)
    assert dense_logits.std() > 0.1 and dense_grads["blocks.0.attn.mat_qkv.weight"].abs().max() > 1e-2  # attention matters
    assert_close_to_scale(auto_logits, dense_logits, "logits")
    for name, grad in dense_grads.items():
        assert_close_to_scale(auto_grads[name], grad, name)


@pytest.mark.parametrize("attn_impl", ["auto", "dense"])
def test_both_paths_give_vars_reference_logits(attn_impl):
    ref = load_model_reference()
    model = reference_model(ref=ref, attn_impl=attn_impl)
    with torch.no_grad():
        torch.testing.assert_close(model(ref["label_B"], ref["x_BLCv"]), ref["logits_BLV"], rtol=0, atol=1e-5)


def attention_flops(query_shape, key_shape, *args, **kwargs) -> int:
    """Independent count for torch's fused CPU kernel: q k^T and p v, 2 FLOPs per multiply-add."""
    B, H, Lq, c = query_shape
    return 2 * 2 * B * H * Lq * key_shape[-2] * c


@pytest.mark.parametrize("attn_impl", ["auto", "dense"])
@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"w{w}")
def test_executed_flops_equal_what_the_forward_runs(window, attn_impl):
    """pretrain.model.flops counts executed FLOPs from module shapes and tiles; torch's FLOP
    counter counts the matmuls and attention kernels the forward actually dispatches."""
    model = lively_model(window, impl=attn_impl).eval()
    label_B = torch.tensor([0, 1, 2])
    x_BLCv = torch.randn(3, model.L - model.first_l, model.Cvae)
    kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping={kernel: attention_flops}) as counter:
        model(label_B, x_BLCv)
    assert counter.get_total_flops() == 3 * executed_forward_flops_per_sample(model)
