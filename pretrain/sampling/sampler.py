"""KV-cached next-scale sampling for VAR and SRDD (the core every sampling feature builds on).

Per scale k of the schedule: embed the scale's input (start token, or f_hat of the scales
so far downsampled to pn_k), run one transformer pass over its pn_k^2 tokens attending to
the cached keys/values the mask lets it see (pretrain/model/kv_cache.py: block-causal keeps
all, window w the last w scales, window 0 none), combine conditional and unconditional
logits (classifier-free guidance), draw tokens, optionally hand them to a ``refine`` hook,
commit the scale's keys/values, and add the tokens to f_hat through the tokenizer
(``add_scale``). The image is the tokenizer's decode of the final f_hat, in [-1, 1].

Guidance (VAR, models/var.py): logits = (1 + t_k) * cond - t_k * uncond with
t_k = cfg * k / (K - 1) ("linear", VAR's ramp), t_k = cfg ("constant") or none ("off").
The unconditional half (null class) is only run when some t_k != 0. Guidance and the draw
are the head's (pretrain/pyramid/heads.py); for VQ codes: temperature, then top-k, then top-p
(nucleus), then one multinomial draw per token from a ``torch.Generator`` seeded per call, as
VAR's ``sample_with_top_k_top_p_``.

The ``refine`` hook (``refine(step: ScaleStep) -> idx_Bl``) runs once per scale after the
draw, before the tokens enter f_hat; the sampler uses the tokens it returns. ``step.forward()``
re-runs the scale's pass at the same state (same input, same cached prefix; the cache is
committed only afterwards), ``step.draw``/``step.probs`` are the sampler's own draw and the
distribution it samples from. Refinement (SR/MR/policy) and zero-shot editing plug in here.

``vae`` may also be a pyramid codec (pretrain/pyramid/codec.py: pixel space, continuous codes,
absolute bands): it has the same add_scale/next_input/fhat_to_img and a ``head`` that says how
to guide and draw from the transformer's output (continuous codes: a Gaussian draw with
temperature, CFG on the means); the returned pyramid then holds that codec's codes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from pretrain.model.flops import scale_flops
from pretrain.pyramid.heads import CategoricalHead

CFG_SCHEDULES = ("linear", "constant", "off")


@dataclass
class ScaleStep:
    """What a ``refine`` hook sees at scale k (see the module docstring)."""

    k: int                                     # index in the schedule
    pn: int                                    # side of scale k
    patch_nums: tuple[int, ...]                # the schedule being sampled
    label_B: torch.Tensor                      # conditional labels (B,)
    logits_BlV: torch.Tensor                   # guided logits before temperature/top-k/top-p, (B, pn^2, V)
    idx_Bl: torch.Tensor                       # the tokens drawn from them
    forward: Callable[[], torch.Tensor]        # re-run scale k's pass at the same state -> guided logits_BlV
    draw: Callable[[torch.Tensor], torch.Tensor]   # the sampler's draw on guided logits -> idx_Bl
    probs: Callable[[torch.Tensor], torch.Tensor]  # the distribution ``draw`` samples from, (B, pn^2, V)
    guided_batch: int                          # rows per pass: 2B with guidance, B without


Refine = Callable[[ScaleStep], torch.Tensor]


def guidance_weights(cfg: float, K: int, cfg_schedule: str = "linear") -> list[float]:
    """t_k per scale: VAR's linear ramp cfg * k / (K - 1), a constant cfg, or none."""
    if cfg_schedule not in CFG_SCHEDULES:
        raise ValueError(f"cfg_schedule={cfg_schedule!r}: choose one of {CFG_SCHEDULES}")
    if cfg_schedule == "off":
        return [0.0] * K
    if cfg_schedule == "constant" or K == 1:
        return [float(cfg)] * K
    return [cfg * k / (K - 1) for k in range(K)]


def resolve_schedule(model: Any, schedule: Optional[Sequence[int]]) -> tuple[tuple[int, ...], list[int]]:
    """(schedule, index of each of its scales in the model's patch_nums). A schedule must be
    increasing, start at the model's first scale and use only scales the model was built with
    (each scale uses the level/position embeddings of its side)."""
    model_pns = tuple(model.patch_nums)
    pns = model_pns if not schedule else tuple(int(p) for p in schedule)
    where = {pn: i for i, pn in enumerate(model_pns)}
    if list(pns) != sorted(set(pns)) or pns[0] != model_pns[0] or any(pn not in where for pn in pns):
        raise ValueError(f"schedule={list(pns)}: must be an increasing subsequence of the model's "
                         f"patch_nums {list(model_pns)} starting at {model_pns[0]}")
    return pns, [where[pn] for pn in pns]


@torch.no_grad()
def sample(model: Any, vae: Any, label_B: torch.Tensor, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
           seed: Optional[int] = None, schedule: Optional[Sequence[int]] = None, refine: Optional[Refine] = None,
           temperature: float = 1.0, cfg_schedule: str = "linear", return_pyramid: bool = False,
           stats: Optional[dict[str, Any]] = None) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Images (B, 3, H, W) in [-1, 1] for class labels ``label_B`` (and the token pyramid with
    ``return_pyramid``). ``stats``, when given, is filled with ``kv_cache_bytes_peak`` (keys+values
    attended at the worst scale, all layers), ``passes`` (scale passes incl. refinement re-runs),
    ``rows`` (token rows over those passes), ``flops`` (their forward FLOPs), ``loop_s``
    (transformer loop) and ``decode_s`` (final image decode). Call on ``model.eval()``."""
    pns, model_scale = resolve_schedule(model, schedule)
    K, B = len(pns), label_B.shape[0]
    device = model.pos_1LC.device
    label_B = label_B.to(device)
    if label_B.ndim != 1 or not bool(((label_B >= 0) & (label_B <= model.num_classes)).all()):
        raise ValueError(f"label_B must be (B,) class ids in [0, {model.num_classes}] ({model.num_classes} = null)")
    ts = guidance_weights(cfg, K, cfg_schedule)
    guided = any(t != 0 for t in ts)
    rows = 2 * B if guided else B
    labels = torch.cat((label_B, torch.full_like(label_B, model.num_classes))) if guided else label_B
    cond_BD = model.class_emb(labels)
    generator = None if seed is None else torch.Generator(device).manual_seed(seed)
    # a pyramid codec (pretrain/pyramid/codec.py) brings its own head; a VQ-VAE is VAR's categorical one
    head = getattr(vae, "head", None) or CategoricalHead(model.V)
    if refine is not None and not head.supports_refine:
        raise ValueError(f"refine: a {type(head).__name__} draws no single categorical per token to re-draw")
    probs = lambda out_BlX: head.probs(out_BlX, top_k, top_p, temperature)  # noqa: E731
    draw = lambda out_BlX: head.draw(out_BlX, generator, top_k, top_p, temperature)  # noqa: E731
    guide = head.guide
    cache = model.new_cache()
    counts = {"passes": 0, "rows": 0, "flops": 0}

    t_start = time.perf_counter()
    f_hat_BChw, idx_list = None, []
    for k, pn in enumerate(pns):
        if k == 0:
            x_BlC = model.scale_input(0, cond_BD)
        else:
            x_BlC = model.scale_input(model_scale[k], cond_BD, vae.next_input(f_hat_BChw, k - 1, pns))
            x_BlC = x_BlC.repeat(2, 1, 1) if guided else x_BlC

        def scale_pass(k: int = k, x_BlC: torch.Tensor = x_BlC) -> torch.Tensor:
            logits_BlV = model.forward_scale(x_BlC, cond_BD, cache)
            counts["passes"] += 1
            counts["rows"] += rows * pns[k] ** 2
            counts["flops"] += scale_flops(model, k, pns, rows)
            t = ts[k]
            return guide(logits_BlV[:B], logits_BlV[B:], t) if guided else logits_BlV

        logits_BlV = scale_pass()
        idx_Bl = draw(logits_BlV)
        if refine is not None:
            idx_Bl = refine(ScaleStep(k=k, pn=pn, patch_nums=pns, label_B=label_B, logits_BlV=logits_BlV,
                                      idx_Bl=idx_Bl, forward=scale_pass, draw=draw, probs=probs, guided_batch=rows))
        cache.commit()
        f_hat_BChw = vae.add_scale(f_hat_BChw, idx_Bl, k, pns)
        idx_list.append(idx_Bl)
    t_loop = time.perf_counter()
    img_B3HW = vae.fhat_to_img(f_hat_BChw)
    if stats is not None:
        stats.update(counts, kv_cache_bytes_peak=cache.bytes_peak, loop_s=t_loop - t_start,
                     decode_s=time.perf_counter() - t_loop)
    return (img_B3HW, idx_list) if return_pyramid else img_B3HW
