"""FLOPs of the transformer, counted from the built model (one convention for every area).

Two counts (docs/model.md):
- *attended* (``flops`` in the training records): the scaling-law convention below, counting
  only the (query, key) pairs the mask allows, whatever kernel runs;
- *executed* (``flops_executed``): the multiply-adds the path in use runs: every linear layer at
  the rows it actually processes (``ada_lin`` once per sample, ``word_embed`` on the L - first_l
  input tokens) plus the (query, key) pairs the attention path computes (all L x L for
  ``attn_impl=dense``, the mask's tiles for ``auto``). What MFU and the FLOP bound of a speed
  ratio are made of (bench/train_step.py, bench/gpu.py).

Attended convention (Kaplan et al. 2020, Hoffmann et al. 2022), per token of a forward pass:
    2 * N_nonembed                      every parameter in a matmul does one multiply-add
  + 2 * 2 * keys * width * depth        QK^T and AV: one multiply-add per key, channel, layer
where ``keys`` = tokens the query attends to under the mask (scale k: its own scale plus the
visible earlier scales, ``attended_keys``). Only attended keys count (useful FLOPs): a dense
masked kernel does more work. Training = 3 x forward (backward ~ 2 x forward).

Known simplification: the AdaLN projections (``ada_lin``, ~1/3 of a block's parameters) run
once per sample and scale pass, not per token, so 2 * N_nonembed over-counts them for scales
with many tokens; we keep the standard 2N rule so that FLOPs and N stay comparable with
the scaling-law literature. Norms, softmax, biases and the embedding lookups are ignored.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from torch import nn

from pretrain.model.masks import attention_tiles, first_visible_scale

_MODELS_WINDOW = object()  # sentinel: use the model's own attn_window


def attended_keys(k: int, patch_nums: Sequence[int], attn_window: Optional[int]) -> int:
    """Keys a scale-k query attends to: scales first_visible..k of ``patch_nums``."""
    return sum(pn * pn for pn in patch_nums[first_visible_scale(k, attn_window):k + 1])


def token_forward_flops(n_nonembed: int, depth: int, width: int, keys: int) -> int:
    """Forward FLOPs of one token attending to ``keys`` keys (module docstring)."""
    return 2 * n_nonembed + 4 * depth * width * keys


def scale_flops(model: Any, k: int, patch_nums: Optional[Sequence[int]] = None, batch: int = 1) -> int:
    """Forward FLOPs of one scale-k pass over ``batch`` sequences (a sampling or refinement pass)."""
    pns = tuple(patch_nums or model.patch_nums)
    keys = attended_keys(k, pns, model.attn_window)
    return batch * pns[k] ** 2 * token_forward_flops(model.num_non_embedding_params(), model.depth, model.C, keys)


def forward_flops_per_sample(model: Any, patch_nums: Optional[Sequence[int]] = None,
                             attn_window: Any = _MODELS_WINDOW) -> int:
    """Forward FLOPs of one teacher-forced sequence (all scales), under the model's mask by default."""
    pns = tuple(patch_nums or model.patch_nums)
    window = model.attn_window if attn_window is _MODELS_WINDOW else attn_window
    n = model.num_non_embedding_params()
    return sum(pn * pn * token_forward_flops(n, model.depth, model.C, attended_keys(k, pns, window))
               for k, pn in enumerate(pns))


def forward_flops_per_token(model: Any, **kwargs: Any) -> float:
    """Forward FLOPs per token, averaged over the sequence."""
    pns = tuple(kwargs.get("patch_nums") or model.patch_nums)
    return forward_flops_per_sample(model, **kwargs) / sum(pn * pn for pn in pns)


def train_flops_per_sample(model: Any, **kwargs: Any) -> int:
    """Training FLOPs of one sequence: forward + backward = 3 x forward."""
    return 3 * forward_flops_per_sample(model, **kwargs)


def refine_objective_flops_factor(objective: str, replace: float) -> float:
    """Training FLOPs with ``train.refine_objective`` over those without (pretrain/train/refine_objective.py):
    the draft stream attends to as many keys per token as the clean one, so it is a second forward +
    backward (x 2), plus one no-grad forward to draw replacement tokens when ``replace`` > 0 (+ 1/3).
    For executed FLOPs this is exact under window 0; other masks run both streams as one dense 2L
    sequence, which executes more attention pairs than the factor counts."""
    if objective == "off":
        return 1.0
    return 2.0 + (1.0 / 3.0 if replace > 0 else 0.0)


# ---- executed FLOPs -----------------------------------------------------------------------------
def executed_attention_pairs(patch_nums: Sequence[int], attn_window: Optional[int], attn_impl: str) -> int:
    """(query, key) pairs one attention layer computes per sample: L^2 dense, the tiles' otherwise."""
    if attn_impl == "dense":
        return sum(pn * pn for pn in patch_nums) ** 2
    return sum(t.pairs for t in attention_tiles(patch_nums, attn_window))


def executed_forward_flops_per_sample(model: Any, patch_nums: Optional[Sequence[int]] = None,
                                      attn_window: Any = _MODELS_WINDOW, attn_impl: Optional[str] = None) -> int:
    """Forward FLOPs of one teacher-forced sequence as executed (module docstring); defaults: the
    model's schedule, mask and ``attn_impl``. Norms, softmax, biases and lookups are not counted."""
    pns = tuple(patch_nums or model.patch_nums)
    window = model.attn_window if attn_window is _MODELS_WINDOW else attn_window
    L = sum(pn * pn for pn in pns)
    rows = {"word_embed": L - pns[0] ** 2}  # scale 0's input is the class token: no matmul
    flops = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            per_sample = "ada_lin" in name  # AdaLN reads the class embedding: one row per sample
            flops += 2 * m.in_features * m.out_features * (1 if per_sample else rows.get(name, L))
    pairs = executed_attention_pairs(pns, window, attn_impl or model.attn_impl)
    return flops + 4 * model.depth * model.C * pairs


def train_flops_executed_per_sample(model: Any, **kwargs: Any) -> int:
    """Executed training FLOPs of one sequence: 3 x executed forward (the standard MFU
    convention: the flash kernels' recomputation in the backward is not counted)."""
    return 3 * executed_forward_flops_per_sample(model, **kwargs)
