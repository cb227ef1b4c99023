"""Refinement that changes what the model conditions on: restart, self-correction, and the
one-pass baseline every refinement has to beat (docs/sampling.md, "Refinement").

SRDD (arXiv 2509.22636) reads VAR with a Markovian mask as a deterministic discrete diffusion:
after scale k the whole state is the estimate f_hat and the step index, so the model can be
re-entered at any step from any estimate. Re-drawing a scale from the *same* state gives the
same logits: a fresh draw of the same distribution (no effect in expectation) or a reweighting
of it that one draw could do. The paper's Simple/Mask Resampling algorithms are not public;
the platform's versions change the state between rounds:

- Restart (``sample.refine=sr``, ``RestartSchedule``): after scale k, push f_hat back through
  the forward process to step j = k + 1 - ``refine_depth`` and regenerate scales j..k from
  there, R rounds (the sampler core runs it: pretrain/sampling/sampler.py).
- Self-correction (``sample.refine=mr``, ``SelfCorrect``): tokens of the draft whose
  probability is below ``p_resample`` are removed and re-predicted by a pass that sees the
  kept ones (the model's self-correction inputs, trained with ``train.refine_objective``), R rounds.
- The learned policy (``sample.refine=policy``, pretrain/policy.py): a restart round per
  sample and scale where a small network predicts a quality gain worth its FLOPs.
- One-pass baseline (``sample.refine=onepass``, ``OnePassMR``): the distribution the old
  Masked Resampling produced (re-draw tokens below ``p_resample`` from the same distribution,
  R times), drawn in one go: zero extra passes.

Cost: every pass the sampler runs is counted by kind (``sample(stats=...)``); ``RefineCost``
sums the refinement kinds over calls (``add_stats``) and the hooks' token counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch


@dataclass
class RefineCost:
    """Extra work refinement added to one or more sampler calls."""

    passes: int = 0             # extra scale passes: self-correction, regenerated scales and restart prefixes
    rows: int = 0               # their transformer rows: tokens x guided batch
    flops: int = 0              # their forward FLOPs
    kv_recompute_passes: int = 0  # of those, the passes that only rebuild a restart's prefix keys/values
    kv_recompute_flops: int = 0
    restart_rows: int = 0       # restart rounds x rows restarted
    redrawn_tokens: int = 0     # self-correction: tokens remasked and re-predicted (conditional batch, summed over rounds)
    changed_tokens: int = 0     # of those, re-predictions that changed the code
    passes_per_scale: dict[int, int] = field(default_factory=dict)

    def add_stats(self, stats: dict[str, Any]) -> None:
        """Add one ``sample(stats=...)`` call's refinement counts."""
        for what in ("passes", "rows", "flops"):
            setattr(self, what, getattr(self, what) + stats[f"refine_{what}"] + stats[f"kv_recompute_{what}"])
        self.kv_recompute_passes += stats["kv_recompute_passes"]
        self.kv_recompute_flops += stats["kv_recompute_flops"]
        self.restart_rows += stats["restart_rows"]
        for k, n in stats["refine_passes_per_scale"].items():
            self.passes_per_scale[k] = self.passes_per_scale.get(k, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {"passes": self.passes, "rows": self.rows, "flops": self.flops,
                "kv_recompute_passes": self.kv_recompute_passes, "kv_recompute_flops": self.kv_recompute_flops,
                "restart_rows": self.restart_rows, "redrawn_tokens": self.redrawn_tokens,
                "changed_tokens": self.changed_tokens,
                "passes_per_scale": {str(k): v for k, v in sorted(self.passes_per_scale.items())}}


def token_prob(probs_BlV: torch.Tensor, idx_Bl: torch.Tensor) -> torch.Tensor:
    """Probability of each drawn token under the distribution it was drawn from, (B, l)."""
    return probs_BlV.gather(-1, idx_Bl.unsqueeze(-1)).squeeze(-1)


def in_range(k: int, scales: Optional[Sequence[int]]) -> bool:
    """``sample.refine_scales`` = [first, last] (inclusive); empty = every scale."""
    return not scales or scales[0] <= k <= scales[1]


class RestartSchedule:
    """``sample.refine=sr``: every row gets ``rounds`` restart rounds at every scale in range."""

    def __init__(self, rounds: int, depth: int, scales: Optional[Sequence[int]] = None):
        self.rounds, self.depth, self.scales = rounds, depth, tuple(scales or ())

    def select(self, step: Any) -> torch.Tensor:
        return torch.full((len(step.label_B),), in_range(step.k, self.scales), dtype=torch.bool,
                          device=step.label_B.device)


class SelfCorrect:
    """``sample.refine=mr``: a refine hook; R rounds of remask (probability < ``p_resample`` under the
    distribution the token came from) -> draft pass -> re-draw the removed tokens. A round that
    removes nothing runs no pass, so p_resample = 0 costs nothing and changes nothing."""

    def __init__(self, p_resample: float, rounds: int, scales: Optional[Sequence[int]] = None,
                 cost: Optional[RefineCost] = None):
        self.p_resample, self.rounds, self.scales = p_resample, rounds, tuple(scales or ())
        self.cost = cost if cost is not None else RefineCost()

    def __call__(self, step: Any) -> torch.Tensor:
        idx_Bl, logits_BlV = step.idx_Bl, step.logits_BlV
        if not in_range(step.k, self.scales):
            return idx_Bl
        for _ in range(self.rounds):
            low_Bl = token_prob(step.probs(logits_BlV), idx_Bl) < self.p_resample
            if not bool(low_Bl.any()):
                break
            logits_BlV = step.forward_draft(idx_Bl, ~low_Bl)
            new_Bl = step.draw(logits_BlV)
            self.cost.redrawn_tokens += int(low_Bl.sum())
            self.cost.changed_tokens += int((low_Bl & (new_Bl != idx_Bl)).sum())
            idx_Bl = torch.where(low_Bl, new_Bl, idx_Bl)
        return idx_Bl


def mr_equivalent(probs_BlV: torch.Tensor, p_resample: float, rounds: int) -> torch.Tensor:
    """The distribution of R rounds of same-state Masked Resampling (draw x ~ p; while p(x) <
    p_resample, draw again, at most R times), in closed form. With P = p(low tokens):
    a low token survives only if all R + 1 draws were low, q(x) = p(x) P^R; a high token is
    taken at the first high draw, q(x) = p(x) (1 + P + ... + P^R)."""
    low_BlV = probs_BlV < p_resample
    P_Bl1 = (probs_BlV * low_BlV).sum(-1, keepdim=True)
    high_weight = torch.where(P_Bl1 < 1, (1 - P_Bl1 ** (rounds + 1)) / (1 - P_Bl1).clamp_min(1e-12), 1.0)
    return probs_BlV * torch.where(low_BlV, P_Bl1 ** rounds, high_weight)


class OnePassMR:
    """``sample.refine=onepass``: one draw from ``mr_equivalent`` instead of the sampler's (no pass)."""

    def __init__(self, p_resample: float, rounds: int, scales: Optional[Sequence[int]] = None):
        self.p_resample, self.rounds, self.scales = p_resample, rounds, tuple(scales or ())

    def __call__(self, step: Any) -> torch.Tensor:
        if not in_range(step.k, self.scales):
            return step.idx_Bl
        return step.draw_from(mr_equivalent(step.probs(step.logits_BlV), self.p_resample, self.rounds))
