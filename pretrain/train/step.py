"""One optimizer step (with gradient accumulation and the NaN guard) and the validation pass.

The loss is the head's (pretrain/pyramid/heads.py; VAR's token cross-entropy by default): over all
L = sum(pn^2) tokens, each token weighted equally, label smoothing 0.1 in the optimised objective.
What is *logged* as ``loss`` is the plain per-token loss (no smoothing), the quantity the validation
pass and the scaling fits use; the smoothed objective is only optimised.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist

from pretrain.model.masks import scale_bounds
from pretrain.pyramid.heads import token_losses
from pretrain.train.signals import StopRequest

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # label_B, x_BLCv_wo_first_l, target_BL
# (output, target, label_smoothing) -> (objective, nll_BL, correct_BL): a head's ``loss`` (pretrain/pyramid/heads.py);
# the default is the categorical head's (VAR's token cross-entropy)
LossFn = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class NonFiniteLossError(RuntimeError):
    """Too many consecutive NaN/inf losses: the run stops instead of training on garbage."""


class ScaleStats:
    """Running sums of per-scale CE and hits; ``reduce`` all-reduces them over ranks."""

    def __init__(self, patch_nums: Sequence[int]):
        self.bounds = scale_bounds(patch_nums)
        self.reset()

    def reset(self) -> None:
        k = len(self.bounds)
        self.sums_3K = torch.zeros(3, k, dtype=torch.float64)  # nll, hits, tokens

    def add(self, nll_BL: torch.Tensor, correct_BL: torch.Tensor) -> None:
        # Per-scale sums are stacked where the batch lives and copied to the host once per
        # micro-batch (not twice per scale: each copy is a device sync on a GPU).
        sums_2K = torch.stack([torch.stack([nll_BL[:, a:b].double().sum(), correct_BL[:, a:b].double().sum()])
                               for a, b in self.bounds], dim=1)
        self.sums_3K[:2] += sums_2K.cpu()
        self.sums_3K[2] += torch.tensor([nll_BL[:, a:b].numel() for a, b in self.bounds], dtype=torch.float64)

    def reduce(self, device: torch.device) -> dict[str, Any]:
        sums = self.sums_3K.to(device)
        if dist.is_initialized():
            dist.all_reduce(sums)
        nll, hits, n = sums.cpu()
        self.reset()
        return {"loss": float(nll.sum() / n.sum()), "acc": float(hits.sum() / n.sum()),
                "loss_per_scale": (nll / n).tolist(), "acc_per_scale": (hits / n).tolist()}


@dataclass
class StepOutcome:
    grad_norm: float | None
    skipped_batches: int  # non-finite micro-batches dropped (and replaced) within this step
    stop: bool  # some rank was asked to stop: checkpoint now


def _any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    t = torch.tensor([float(f) for f in flags], device=device)
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def _local_grad_norm(engine: Any) -> float:
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


class Stepper:
    """Runs optimizer steps on a DeepSpeed engine from an iterator of model-ready batches.

    NaN guard: every micro-batch's loss is checked on all ranks *before* backward. A batch
    whose loss is non-finite on any rank is dropped by all ranks together and the next batch
    takes its place, so no gradient from it is accumulated and DeepSpeed's accumulation
    counter never advances for it. After ``max_bad`` consecutive dropped batches the run stops
    with NonFiniteLossError (diverged weights make every batch bad; skipping forever would
    burn the allocation).
    """

    def __init__(self, engine: Any, batches: Iterator[Batch], stats: ScaleStats, label_smoothing: float,
                 grad_accum: int, max_bad: int, device: torch.device, loss_fn: LossFn = token_losses):
        self.engine, self.batches, self.stats, self.loss_fn = engine, batches, stats, loss_fn
        self.label_smoothing, self.grad_accum, self.max_bad = label_smoothing, grad_accum, max_bad
        self.device = device
        self.consecutive_bad = 0

    def step(self, stop: StopRequest) -> StepOutcome:
        engine, skipped, micro, stop_now = self.engine, 0, 0, False
        grad_norm = None
        while micro < self.grad_accum:
            label_B, x_BLCv, target_BL = next(self.batches)
            logits_BLV = engine(label_B, x_BLCv)
            objective, nll_BL, correct_BL = self.loss_fn(logits_BLV, target_BL, self.label_smoothing)
            bad, stop_now = _any_rank([not torch.isfinite(objective).item(), stop.requested()], self.device)
            if bad:
                skipped += 1
                self.consecutive_bad += 1
                if self.consecutive_bad > self.max_bad:
                    raise NonFiniteLossError(
                        f"{self.consecutive_bad} consecutive batches had a non-finite loss "
                        f"(train.max_bad_steps={self.max_bad}); the model has likely diverged: "
                        "lower train.lr_base/lr_peak or raise train.warmup_frac, then resume")
                continue
            self.consecutive_bad = 0
            self.stats.add(nll_BL, correct_BL)
            engine.backward(objective)
            micro += 1
            if micro == self.grad_accum and engine.zero_optimization_stage() == 0:
                grad_norm = _local_grad_norm(engine)  # reduced already; DS reports no norm at stage 0
            engine.step()
        reported = engine.get_global_grad_norm()
        if reported is not None:
            grad_norm = float(reported)
        return StepOutcome(grad_norm, skipped, stop_now)


@torch.no_grad()
def evaluate(engine: Any, batches: Iterator[Batch], stats: ScaleStats, max_batches: int,
             device: torch.device, loss_fn: LossFn = token_losses) -> dict[str, Any]:
    """Plain CE / accuracy per scale over up to ``max_batches`` val batches (eval mode: no
    class dropout, so no RNG is consumed and resume stays exact)."""
    engine.eval()
    stats.reset()
    for _, (label_B, x_BLCv, target_BL) in zip(range(max_batches), batches):
        _, nll_BL, correct_BL = loss_fn(engine(label_B, x_BLCv), target_BL, 0.0)
        stats.add(nll_BL, correct_BL)
    engine.train()
    return stats.reduce(device)
