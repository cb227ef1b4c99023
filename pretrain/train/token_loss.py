"""The transformer's objective on the harness: a head's token loss per micro-batch, its per-scale
bookkeeping and the val pass.

The loss is the head's (pretrain/pyramid/heads.py; VAR's token cross-entropy by default): over all
L = sum(pn^2) tokens, each token weighted equally, label smoothing 0.1 in the optimised objective.
What is *logged* as ``loss`` is the plain per-token loss (no smoothing), the quantity the validation
pass and the scaling fits use; the smoothed objective is only optimised.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist

from pretrain.model.masks import scale_bounds
from pretrain.pyramid.heads import token_losses
from pretrain.train.task import StepLoss

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # label_B, x_BLCv_wo_first_l, target_BL
# (output, target, label_smoothing) -> (objective, nll_BL, correct_BL); a pyramid codec's head.loss (pretrain/pyramid)
LossFn = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


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


class TokenObjective:
    """One teacher-forced micro-batch of the transformer (engine ``model``); accepted batches feed ``stats``."""

    def __init__(self, engine: Any, stats: ScaleStats, label_smoothing: float, loss_fn: LossFn = token_losses):
        self.engine, self.stats, self.label_smoothing, self.loss_fn = engine, stats, label_smoothing, loss_fn

    def loss(self, batch: Batch) -> StepLoss:
        label_B, x_BLCv, target_BL = batch
        objective, nll_BL, correct_BL = self.loss_fn(self.engine(label_B, x_BLCv), target_BL, self.label_smoothing)
        return StepLoss({"model": objective}, {"nll_BL": nll_BL, "correct_BL": correct_BL})

    def accumulate(self, out: StepLoss) -> None:
        self.stats.add(out.metrics["nll_BL"], out.metrics["correct_BL"])


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
