"""KV-cached next-scale sampling for VAR and SRDD (the core every sampling feature builds on).

Per scale k of the schedule: embed the scale's input (start token, or f_hat of the scales
so far downsampled to pn_k), run one transformer pass over its pn_k^2 tokens attending to
the cached keys/values the mask lets it see (pretrain/model/kv_cache.py: block-causal keeps
all, window w the last w scales, window 0 none), combine conditional and unconditional
logits (classifier-free guidance), draw tokens, hand them to the ``refine`` hook, commit the
scale's keys/values, and add the tokens to f_hat through the tokenizer (``add_scale``). The
image is the tokenizer's decode of the final f_hat, in [-1, 1].

Guidance (VAR, models/var.py): logits = (1 + t_k) * cond - t_k * uncond with
t_k = cfg * k / (K - 1) ("linear", VAR's ramp), t_k = cfg ("constant") or none ("off").
The unconditional half (null class) is only run when some t_k != 0. Guidance and the draw
are the head's (pretrain/pyramid/heads.py); for VQ codes: temperature, then top-k, then top-p
(nucleus), then one multinomial draw per token. With a ``seed``, each draw of scale k uses its
own ``torch.Generator`` seeded from (seed, k, visit) (visit = how often scale k was drawn in
this call), so a trajectory's later scales see the same random numbers whether or not an
earlier scale was refined (the learned policy's gain measurements rely on it).

Two refinement entry points (docs/sampling.md, "Refinement"):

- ``refine(step: ScaleStep) -> idx_Bl``: a token hook, once per scale draw, before the tokens
  enter f_hat; the sampler uses the tokens it returns. ``step.draw``/``step.probs`` are the
  sampler's draw and the distribution it samples from, ``step.draw_from(probs)`` draws from
  another distribution, ``step.forward_draft(idx_Bl, keep_Bl)`` runs scale k's self-correction
  pass (the draft's kept tokens in the state, the rest masked; attends to the committed prefix,
  stages nothing). Self-correction and the one-pass baseline plug in here.
- ``restart``: after scale k is final, ``restart.select(step)`` names the rows that get
  ``restart.rounds`` restart rounds. A round re-enters the Markov state: the current estimate
  f_hat is pushed back through the forward process (residual-quantised on the first
  j = k + 1 - ``restart.depth`` scales, ``vae.requantize``) and scales j..k are regenerated for
  those rows from there, every draw again through ``refine``. Under a mask that is not window 0
  the regenerated scales attend to the prefix's keys/values, which belong to the old state: they
  are recomputed (block-causal reuses the leading scales whose inputs did not change) and
  counted as ``kv_recompute_*``; SRDD's Markovian mask needs none.

``constrain(k, idx_Bl, rows_B) -> idx_Bl`` (zero-shot editing's clamp, pretrain/sampling/edit.py)
applies to every scale's tokens, before and after ``refine``, and to a restart's re-quantised
prefix, so the state always holds the known tokens.

``vae`` may also be a pyramid codec (pretrain/pyramid/codec.py: pixel space, continuous codes,
absolute bands): it has the same add_scale/next_input/fhat_to_img and a ``head`` that says how
to guide and draw from the transformer's output (continuous codes: a Gaussian draw with
temperature, CFG on the means); the returned pyramid then holds that codec's codes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np
import torch

from pretrain.model.flops import scale_flops
from pretrain.pyramid.heads import CategoricalHead, draw_tokens

CFG_SCHEDULES = ("linear", "constant", "off")
COUNT_KINDS = ("base", "refine", "kv_recompute")  # a pass of the plain chain, of refinement, of a restart's prefix


@dataclass
class ScaleStep:
    """What a ``refine`` hook (and ``restart.select``) sees at one draw of scale k (module docstring)."""

    k: int                                     # index in the schedule
    pn: int                                    # side of scale k
    patch_nums: tuple[int, ...]                # the schedule being sampled
    label_B: torch.Tensor                      # conditional labels of these rows (B,)
    rows_B: torch.Tensor                       # which rows of the sampling call they are (restarts regenerate a subset)
    visit: int                                 # 0 = scale k's first draw for the call; r = its (r+1)-th
    t: float                                   # guidance weight t_k
    logits_BlV: torch.Tensor                   # guided logits before temperature/top-k/top-p, (B, pn^2, V)
    idx_Bl: torch.Tensor                       # the tokens drawn from them
    draw: Callable[[torch.Tensor], torch.Tensor]        # the sampler's draw on guided logits -> idx_Bl
    probs: Callable[[torch.Tensor], torch.Tensor]       # the distribution ``draw`` samples from, (B, pn^2, V)
    draw_from: Callable[[torch.Tensor], torch.Tensor]   # one draw per token from a given (B, pn^2, V) distribution
    forward_draft: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (idx_Bl, keep_Bl) -> guided logits of the draft pass
    guided_batch: int                          # rows per pass: 2B with guidance, B without


Refine = Callable[[ScaleStep], torch.Tensor]
Constrain = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]  # (k, idx_Bl, rows_B) -> idx_Bl


class Restart(Protocol):
    """Which rows get restart rounds after each scale (pretrain/sampling/refine.py builds them)."""

    rounds: int
    depth: int

    def select(self, step: ScaleStep) -> torch.Tensor: ...  # (B,) bool


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


def draw_seed(seed: int, k: int, visit: int) -> int:
    """The generator seed of the ``visit``-th draw of scale k in a call seeded ``seed``."""
    return int(np.random.SeedSequence([seed, k, visit]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class Rows:
    """Trajectories being sampled: all rows of the call, or the subset a restart regenerates."""

    label_B: torch.Tensor
    rows_B: torch.Tensor
    cond_BD: torch.Tensor      # class embeddings of the guided batch (conditional, then null)
    cache: Any                 # pretrain.model.kv_cache.KVCache
    f_hat: Optional[torch.Tensor] = None  # state after the scales in ``idx``
    idx: list[torch.Tensor] = field(default_factory=list)

    def guided_rows(self, sel_b: torch.Tensor) -> torch.Tensor:
        """Indices of rows ``sel_b`` in the guided batch (conditional and null halves)."""
        B = len(self.label_B)
        return torch.cat((sel_b, sel_b + B)) if self.cond_BD.shape[0] == 2 * B else sel_b


class Chain:
    """One sampling call: the scale loop, refinement hooks, restarts and their counts."""

    def __init__(self, model: Any, vae: Any, label_B: torch.Tensor, cfg: float, top_k: int, top_p: float,
                 seed: Optional[int], schedule: Optional[Sequence[int]], temperature: float, cfg_schedule: str,
                 refine: Optional[Refine], restart: Optional[Restart], constrain: Optional[Constrain]):
        self.model, self.vae, self.refine, self.restart, self.constrain = model, vae, refine, restart, constrain
        self.pns, self.model_scale = resolve_schedule(model, schedule)
        self.device = model.pos_1LC.device
        if label_B.ndim != 1 or not bool(((label_B >= 0) & (label_B <= model.num_classes)).all()):
            raise ValueError(f"label_B must be (B,) class ids in [0, {model.num_classes}] ({model.num_classes} = null)")
        self.ts = guidance_weights(cfg, len(self.pns), cfg_schedule)
        self.guided = any(t != 0 for t in self.ts)
        # a pyramid codec (pretrain/pyramid/codec.py) brings its own head; a VQ-VAE is VAR's categorical one
        self.head = getattr(vae, "head", None) or CategoricalHead(model.V)
        if (refine is not None or restart is not None) and not self.head.supports_refine:
            raise ValueError(f"refine: a {type(self.head).__name__} draws no single categorical per token to re-draw")
        if restart is not None and not hasattr(vae, "requantize"):
            raise ValueError(f"restart: {type(vae).__name__} has no residual forward process to re-enter (requantize)")
        self.truncation = (top_k, top_p, temperature)
        self.seed = seed
        self.visits = [0] * len(self.pns)
        self.counts: dict[str, Any] = {f"{kind}_{what}": 0 for kind in COUNT_KINDS for what in ("passes", "rows", "flops")}
        self.counts.update(restart_rows=0, refine_passes_per_scale={})
        label_B = label_B.to(self.device)
        self.all = self.rows(label_B, torch.arange(len(label_B), device=self.device), model.new_cache())

    def rows(self, label_B: torch.Tensor, rows_B: torch.Tensor, cache: Any) -> Rows:
        labels = torch.cat((label_B, torch.full_like(label_B, self.model.num_classes))) if self.guided else label_B
        return Rows(label_B, rows_B, self.model.class_emb(labels), cache)

    # ---- one pass ------------------------------------------------------------------------
    def scale_input(self, k: int, r: Rows, f_hat_prev: Optional[torch.Tensor]) -> torch.Tensor:
        if k == 0:
            return self.model.scale_input(0, r.cond_BD)
        x_BlC = self.model.scale_input(self.model_scale[k], r.cond_BD, self.vae.next_input(f_hat_prev, k - 1, self.pns))
        return x_BlC.repeat(2, 1, 1) if self.guided else x_BlC

    def forward(self, k: int, r: Rows, x_BlC: torch.Tensor, kind: str, stage: bool = True) -> torch.Tensor:
        """Guided logits of one scale-k pass over rows ``r`` (counted as ``kind``)."""
        logits_BlV = self.model.forward_scale(x_BlC, r.cond_BD, r.cache, stage)
        rows = x_BlC.shape[0]
        self.counts[f"{kind}_passes"] += 1
        self.counts[f"{kind}_rows"] += rows * self.pns[k] ** 2
        self.counts[f"{kind}_flops"] += scale_flops(self.model, k, self.pns, rows)
        if kind == "refine":
            per_scale = self.counts["refine_passes_per_scale"]
            per_scale[k] = per_scale.get(k, 0) + 1
        B = len(r.label_B)
        return self.head.guide(logits_BlV[:B], logits_BlV[B:], self.ts[k]) if self.guided else logits_BlV

    def draft_pass(self, k: int, r: Rows, x_BlC: torch.Tensor, idx_Bl: torch.Tensor, keep_Bl: torch.Tensor) -> torch.Tensor:
        """Scale k's self-correction pass: its input with the draft's kept tokens committed and the rest masked."""
        delta_BlCv = self.vae.draft_delta(idx_Bl, keep_Bl, k, self.pns)
        masked_Bl = ~keep_Bl
        if self.guided:
            delta_BlCv, masked_Bl = delta_BlCv.repeat(2, 1, 1), masked_Bl.repeat(2, 1)
        return self.forward(k, r, self.model.draft_input(x_BlC, delta_BlCv, masked_Bl), "refine", stage=False)

    # ---- one scale -------------------------------------------------------------------------
    def scale(self, k: int, r: Rows, kind: str) -> ScaleStep:
        """Draw scale k for rows ``r`` (pass, draw, ``refine``), commit it and add it to their f_hat."""
        x_BlC = self.scale_input(k, r, r.f_hat)
        logits_BlV = self.forward(k, r, x_BlC, kind)
        generator = (None if self.seed is None else
                     torch.Generator(self.device).manual_seed(draw_seed(self.seed, k, self.visits[k])))
        top_k, top_p, temperature = self.truncation
        draw = lambda out: self.head.draw(out, generator, top_k, top_p, temperature)  # noqa: E731
        step = ScaleStep(
            k=k, pn=self.pns[k], patch_nums=self.pns, label_B=r.label_B, rows_B=r.rows_B, visit=self.visits[k],
            t=self.ts[k], logits_BlV=logits_BlV, idx_Bl=draw(logits_BlV), draw=draw,
            probs=lambda out: self.head.probs(out, top_k, top_p, temperature),
            draw_from=lambda probs: draw_tokens(probs, generator),
            forward_draft=lambda idx, keep: self.draft_pass(k, r, x_BlC, idx, keep),
            guided_batch=x_BlC.shape[0])
        self.visits[k] += 1
        if self.constrain is not None:
            step.idx_Bl = self.constrain(k, step.idx_Bl, r.rows_B)
        if self.refine is not None:
            step.idx_Bl = self.refine(step)
            if self.constrain is not None:
                step.idx_Bl = self.constrain(k, step.idx_Bl, r.rows_B)
        r.cache.commit()
        r.f_hat = self.vae.add_scale(r.f_hat, step.idx_Bl, k, self.pns)
        r.idx.append(step.idx_Bl)
        return step

    # ---- restart -----------------------------------------------------------------------------
    def restart_round(self, k: int, sel_b: torch.Tensor) -> None:
        """Rows ``sel_b`` of the call re-enter at step j = k + 1 - depth from their current estimate,
        and scales j..k are regenerated (module docstring)."""
        main, j = self.all, max(0, k + 1 - self.restart.depth)
        idx_j = self.vae.requantize(main.f_hat[sel_b], j, self.pns)
        if self.constrain is not None:
            idx_j = [self.constrain(s, idx_Bl, main.rows_B[sel_b]) for s, idx_Bl in enumerate(idx_j)]
        sub = self.rows(main.label_B[sel_b], main.rows_B[sel_b], self.model.new_cache())
        self.rebuild_prefix(sub, main, sel_b, idx_j)
        for s in range(j, k + 1):
            self.scale(s, sub, "refine")
        for s in range(k + 1):
            main.idx[s] = main.idx[s].clone()
            main.idx[s][sel_b] = sub.idx[s]
        main.f_hat = main.f_hat.clone()
        main.f_hat[sel_b] = sub.f_hat
        main.cache.assign(main.guided_rows(sel_b), sub.cache)
        self.counts["restart_rows"] += len(sel_b)

    def rebuild_prefix(self, sub: Rows, main: Rows, sel_b: torch.Tensor, idx_j: list[torch.Tensor]) -> None:
        """``sub`` at step j = len(idx_j): the re-quantised tokens, their state, and (masks other than
        window 0) the prefix's keys/values for that state: block-causal keeps the leading scales whose
        input is unchanged (scale s's input depends on the tokens of scales < s); a window cache no
        longer holds them, so every prefix scale is recomputed."""
        j = len(idx_j)
        sub.idx = list(idx_j)
        keep = j  # prefix scales whose keys/values need no recomputation (all of them under window 0)
        if self.model.attn_window != 0:
            same = 0  # leading scales whose tokens did not change for any selected row
            while same < j and torch.equal(idx_j[same], main.idx[same][sel_b]):
                same += 1
            keep = min(same + 1, j)  # scales 0..same have unchanged inputs
            if main.cache.holds_first(keep):
                sub.cache = main.cache.select(main.guided_rows(sel_b), keep)
            else:
                keep = 0
        f_hat = None
        for s in range(j):
            if s >= keep:
                self.forward(s, sub, self.scale_input(s, sub, f_hat), "kv_recompute")
                sub.cache.commit()
            f_hat = self.vae.add_scale(f_hat, idx_j[s], s, self.pns)
        sub.f_hat = f_hat

    def run(self) -> Rows:
        for k in range(len(self.pns)):
            step = self.scale(k, self.all, "base")
            if self.restart is None:
                continue
            sel_b = self.restart.select(step).nonzero()[:, 0]
            if len(sel_b):
                for _ in range(self.restart.rounds):
                    self.restart_round(k, sel_b)
        return self.all


@torch.no_grad()
def sample(model: Any, vae: Any, label_B: torch.Tensor, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
           seed: Optional[int] = None, schedule: Optional[Sequence[int]] = None, refine: Optional[Refine] = None,
           temperature: float = 1.0, cfg_schedule: str = "linear", return_pyramid: bool = False,
           stats: Optional[dict[str, Any]] = None, restart: Optional[Restart] = None,
           constrain: Optional[Constrain] = None) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Images (B, 3, H, W) in [-1, 1] for class labels ``label_B`` (and the token pyramid with
    ``return_pyramid``). ``stats``, when given, is filled with ``kv_cache_bytes_peak`` (keys+values
    attended at the worst scale of the main chain, all layers), ``passes`` / ``rows`` / ``flops``
    (all scale passes, their token rows and forward FLOPs), the same per kind (``base_*``,
    ``refine_*``: self-correction and regenerated scales, ``kv_recompute_*``: a restart's prefix),
    ``restart_rows`` (row-rounds restarted), ``refine_passes_per_scale``, ``loop_s`` (transformer
    loop) and ``decode_s`` (final image decode). Call on ``model.eval()``."""
    chain = Chain(model, vae, label_B, cfg, top_k, top_p, seed, schedule, temperature, cfg_schedule, refine, restart,
                  constrain)
    t_start = time.perf_counter()
    rows = chain.run()
    t_loop = time.perf_counter()
    img_B3HW = vae.fhat_to_img(rows.f_hat)
    if stats is not None:
        counts = chain.counts
        totals = {what: sum(counts[f"{kind}_{what}"] for kind in COUNT_KINDS) for what in ("passes", "rows", "flops")}
        stats.update(counts, **totals, kv_cache_bytes_peak=rows.cache.bytes_peak, loop_s=t_loop - t_start,
                     decode_s=time.perf_counter() - t_loop)
    return (img_B3HW, rows.idx) if return_pyramid else img_B3HW
