"""Per-scale token refinement: Simple Resampling, Masked Resampling and the learned policy.

SRDD (arXiv 2509.22636) reads VAR with a Markovian mask as a deterministic discrete
diffusion and imports diffusion's resampling: after scale k's tokens are drawn, some of
them are drawn again from the model's distribution at the same state before they enter
f_hat. The paper does not publish its algorithms, so the platform defines them
(docs/sampling.md, "Refinement"):

- Simple Resampling (SR): R rounds; each round re-runs scale k's pass and re-draws every token.
- Masked Resampling (MR): R rounds; each round re-draws only the tokens whose probability under
  the distribution they were drawn from is below ``p_resample``. A round that selects no token
  runs no pass, so p_resample = 0 costs nothing and changes nothing.
- Policy: as MR, with the selection made by a small network on per-token uncertainty
  (pretrain/policy.py).

Cost: under the SRDD mask (window 0) scale k's logits depend only on its own input, so a
re-draw is one pass over pn_k^2 tokens with no cache; under a window w / block-causal mask it
is the same pass attending to the cached prefix. Every pass is counted (``RefineCost``) with
its forward FLOPs (pretrain.model.flops.scale_flops). Note: with a deterministic model in eval mode the
re-run pass reproduces the first pass's logits, so the distributional effect of MR/policy
comes from *which* tokens are re-drawn; the pass is still run and counted, as specified.

The hook contract (``refine(step) -> idx_Bl``, ``step`` a sampler ``ScaleStep``; docs/model.md,
"Sampler core"): ``step.forward()`` re-runs the scale pass, ``step.draw(logits)`` draws with the
sampler's own truncation and generator, ``step.probs(logits)`` is the distribution ``draw``
samples from. ``build_refiner`` (pretrain/sampling/batches.py) makes the hook ``sample.refine``
asks for; this module knows no config.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from pretrain.model.flops import scale_flops


@dataclass
class RefineCost:
    """Extra work refinement added to one or more sampler calls."""

    passes: int = 0             # extra scale passes (one per refined scale and round that selected a token)
    rows: int = 0               # extra transformer rows: tokens x guided batch over those passes
    flops: int = 0              # forward FLOPs of those passes
    redrawn_tokens: int = 0     # tokens selected for a re-draw (conditional batch, summed over rounds)
    changed_tokens: int = 0     # re-drawn tokens whose code actually changed
    passes_per_scale: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"passes": self.passes, "rows": self.rows, "flops": self.flops,
                "redrawn_tokens": self.redrawn_tokens, "changed_tokens": self.changed_tokens,
                "passes_per_scale": {str(k): v for k, v in sorted(self.passes_per_scale.items())}}


def token_prob(probs_BlV: torch.Tensor, idx_Bl: torch.Tensor) -> torch.Tensor:
    """Probability of each drawn token under the distribution it was drawn from, (B, l)."""
    return probs_BlV.gather(-1, idx_Bl.unsqueeze(-1)).squeeze(-1)


Selector = Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]


class Refiner:
    """A ``refine`` hook: R rounds of select -> re-run the scale pass -> re-draw the selected tokens.

    ``select(step, logits_BlV, idx_Bl) -> mask_Bl`` decides which tokens get another draw;
    ``scales = (first, last)`` (inclusive) limits refinement to a scale range."""

    def __init__(self, select: Selector, rounds: int, scales: Optional[Sequence[int]] = None,
                 model: Any = None, cost: Optional[RefineCost] = None):
        self.select, self.rounds = select, rounds
        self.scales = tuple(scales) if scales else None
        self.model = model
        self.cost = cost if cost is not None else RefineCost()

    def active(self, k: int) -> bool:
        return self.scales is None or self.scales[0] <= k <= self.scales[1]

    def __call__(self, step: Any) -> torch.Tensor:
        idx_Bl, logits_BlV = step.idx_Bl, step.logits_BlV
        if not self.active(step.k):
            return idx_Bl
        for _ in range(self.rounds):
            mask_Bl = self.select(step, logits_BlV, idx_Bl)
            if not bool(mask_Bl.any()):
                break  # nothing to re-draw: no pass is run or counted
            logits_BlV = step.forward()
            self._count(step, mask_Bl)
            new_Bl = step.draw(logits_BlV)
            self.cost.changed_tokens += int((mask_Bl & (new_Bl != idx_Bl)).sum())
            idx_Bl = torch.where(mask_Bl, new_Bl, idx_Bl)
        return idx_Bl

    def _count(self, step: Any, mask_Bl: torch.Tensor) -> None:
        rows = step.guided_batch
        self.cost.passes += 1
        self.cost.passes_per_scale[step.k] = self.cost.passes_per_scale.get(step.k, 0) + 1
        self.cost.rows += rows * step.pn * step.pn
        self.cost.redrawn_tokens += int(mask_Bl.sum())
        if self.model is not None:
            self.cost.flops += scale_flops(self.model, step.k, step.patch_nums, rows)


def select_all(step: Any, logits_BlV: torch.Tensor, idx_Bl: torch.Tensor) -> torch.Tensor:
    """Simple Resampling: every token of the scale is re-drawn."""
    return torch.ones_like(idx_Bl, dtype=torch.bool)


def select_below(p_resample: float) -> Selector:
    """Masked Resampling: re-draw tokens whose sampled probability is below ``p_resample``."""
    def select(step: Any, logits_BlV: torch.Tensor, idx_Bl: torch.Tensor) -> torch.Tensor:
        return token_prob(step.probs(logits_BlV), idx_Bl) < p_resample
    return select


def compose(*hooks: Optional[Callable[[Any], torch.Tensor]]) -> Optional[Callable[[Any], torch.Tensor]]:
    """Chain hooks: each sees the previous one's tokens (e.g. refine, then clamp known tokens)."""
    live = [h for h in hooks if h is not None]
    if not live:
        return None

    def hook(step: Any) -> torch.Tensor:
        for h in live:
            step.idx_Bl = h(step)
        return step.idx_Bl
    return hook
