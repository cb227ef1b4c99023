"""One optimizer step over a task's engines: gradient accumulation, the NaN/inf guard, the stop vote.

The guard and the stop request are agreed by all ranks with one all-reduce per micro-batch,
*before* any backward: a rank that decided alone (skip a batch, stop) would leave the others
waiting in a collective that never comes (DeepSpeed's gradient all-reduce, a ZeRO-3 gather).
This module is the only place in the platform that calls ``backward``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import torch
import torch.distributed as dist

from pretrain.train.signals import StopRequest
from pretrain.train.task import StepLoss


class NonFiniteLossError(RuntimeError):
    """Too many consecutive NaN/inf losses: the run stops instead of training on garbage."""


class Objective(Protocol):
    """The part of a task one step needs (``pretrain.train.task.Task`` has it)."""

    def loss(self, batch: Any) -> StepLoss: ...
    def accumulate(self, out: StepLoss) -> None: ...


@dataclass
class StepOutcome:
    grad_norm: float | None  # the main engine's global pre-clip norm
    skipped_batches: int  # non-finite micro-batches dropped (and replaced) within this step
    stop: bool  # some rank was asked to stop: checkpoint now


def any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag OR-ed over all ranks (one all-reduce)."""
    t = torch.tensor([float(f) for f in flags], device=device)
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def _local_grad_norm(engine: Any) -> float:
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def _finite(out: StepLoss) -> bool:
    return all(bool(torch.isfinite(v.detach()).all()) for v in out.objectives.values())


class OptimizerStep:
    """Runs optimizer steps of ``engines`` (name -> DeepSpeed engine) from a micro-batch iterator.

    NaN guard: a micro-batch whose objective is non-finite on any rank is dropped by all ranks
    together and the next batch takes its place, so no gradient from it is accumulated and
    DeepSpeed's accumulation counter never advances for it. After ``max_bad`` consecutive
    dropped batches the run stops with NonFiniteLossError (diverged weights make every batch
    bad; skipping forever would burn the allocation).
    """

    def __init__(self, engines: dict[str, Any], grad_accum: int, max_bad: int, device: torch.device):
        self.engines, self.grad_accum, self.max_bad, self.device = engines, grad_accum, max_bad, device
        self.main = next(iter(engines.values()))
        self.consecutive_bad = 0

    def __call__(self, objective: Objective, batches: Iterator[Any], stop: StopRequest) -> StepOutcome:
        skipped, micro, stop_now, grad_norm = 0, 0, False, None
        while micro < self.grad_accum:
            out = objective.loss(next(batches))
            bad, stop_now = any_rank([not _finite(out), stop.requested()], self.device)
            if bad:
                skipped += 1
                self.consecutive_bad += 1
                if self.consecutive_bad > self.max_bad:
                    raise NonFiniteLossError(
                        f"{self.consecutive_bad} consecutive batches had a non-finite loss "
                        f"(train.max_bad_steps={self.max_bad}); the model has likely diverged: "
                        "lower the learning rate or raise train.warmup_frac, then resume")
                continue
            self.consecutive_bad = 0
            objective.accumulate(out)
            micro += 1
            for name, loss in out.objectives.items():
                engine = self.engines[name]
                engine.backward(loss)
                if engine is self.main and micro == self.grad_accum and engine.zero_optimization_stage() == 0:
                    grad_norm = _local_grad_norm(engine)  # reduced already; DS reports no norm at stage 0
                engine.step()
        reported = self.main.get_global_grad_norm()
        if reported is not None:
            grad_norm = float(reported)
        return StepOutcome(grad_norm, skipped, stop_now)
